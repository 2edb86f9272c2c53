/* The recorder's C entry points: what the start-up hook (ctypes) and the injector (dlopen +
 * call) use. Plain C so any loader can call them. None runs Python on the calling thread.
 *
 *   void* lib = dlopen("build/lib/probing_recorder_cp311.so", RTLD_NOW);
 *   int (*start)(void) = dlsym(lib, "probing_start");
 *   start();   // 0 started, 1 already running here, -1 failed (the reason is logged)
 */
#ifndef PROBING_RECORDER_RECORDER_H_
#define PROBING_RECORDER_RECORDER_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Starts the recorder's threads in this process. Idempotent: a second call says so and
 * changes nothing. */
int probing_start(void);

/* Sets one configuration key (docs/configuration.md). Returns 0, or -1 with a message naming
 * the key and the accepted values in `error` (the old value stays). Thread-safe. */
int probing_config_set(const char* key, const char* value, char* error, size_t error_size);

/* Seals what the rings have pending and stops the recorder's Python-side work. Called at
 * interpreter exit (registered with atexit by the recorder itself). */
void probing_shutdown(void);

/* Called in a forked child (os.register_at_fork): with PROBING=2 starts a fresh recorder with
 * its own rings; otherwise does nothing. The parent's rings are never written by a child. */
void probing_after_fork_child(void);

#ifdef __cplusplus
}
#endif

#endif /* PROBING_RECORDER_RECORDER_H_ */
