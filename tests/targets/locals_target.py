"""Locals too long to show whole: a huge number, a long string and many locals, in a function
waiting until killed."""
import threading

stop = threading.Event()


def hold():
    big = 10 ** 300
    text = "x" * 5000
    many = {}
    a00 = a01 = a02 = a03 = a04 = a05 = a06 = a07 = a08 = a09 = "y" * 300
    a10 = a11 = a12 = a13 = a14 = a15 = a16 = a17 = a18 = a19 = "z" * 300
    stop.wait()  # HOLD-LINE
    return big, text, many


if __name__ == "__main__":
    threading.Thread(target=hold, name="holder", daemon=True).start()
    print("ready", flush=True)
    stop.wait()
