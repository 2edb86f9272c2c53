# The one helper every component uses, in the manner of abseil's absl_cc_library:
#
#   probing_cc_library(NAME format SRCS a.cc HDRS ... DEPS ... PUBLIC_DEPS ...)
#     -> target probing_format, alias probing::format, public headers under include/
#   probing_cc_test(NAME segment_test SRCS segment_test.cc DEPS probing::format)
#     -> a GoogleTest binary registered with ctest
#   probing_cc_benchmark(NAME format_benchmark SRCS ... DEPS ...)
#     -> a Google Benchmark binary; `make bench` runs it fully, ctest runs it once (smoke)
#   probing_cc_fuzzer(NAME segment_fuzzer SRCS ... DEPS ... CORPUS dir)
#     -> with clang: a libFuzzer binary; always: a replay binary that runs the checked-in
#        corpus under ctest (so the corpus is tested with any compiler)
#   probing_cc_binary(NAME probing SRCS ... DEPS ...)
#     -> a program in build/bin

set(PROBING_WARNINGS -Wall -Wextra -Wpedantic)
if(PROBING_WERROR)
  list(APPEND PROBING_WARNINGS -Werror)
endif()

if(PROBING_SANITIZE)
  string(REPLACE "," ";" _san_list "${PROBING_SANITIZE}")
  foreach(_s IN LISTS _san_list)
    add_compile_options(-fsanitize=${_s})
    add_link_options(-fsanitize=${_s})
  endforeach()
  add_compile_options(-fno-omit-frame-pointer -fno-sanitize-recover=all)
endif()

function(_probing_common target)
  target_compile_options(${target} PRIVATE ${PROBING_WARNINGS})
endfunction()

function(probing_cc_library)
  cmake_parse_arguments(P "SHARED" "NAME;OUTPUT_NAME" "SRCS;HDRS;DEPS;PUBLIC_DEPS" ${ARGN})
  set(_t probing_${P_NAME})
  if(P_SHARED)
    add_library(${_t} SHARED ${P_SRCS} ${P_HDRS})
  elseif(P_SRCS)
    add_library(${_t} STATIC ${P_SRCS} ${P_HDRS})
  else()
    add_library(${_t} INTERFACE)
  endif()
  add_library(probing::${P_NAME} ALIAS ${_t})
  if(P_SRCS)
    target_include_directories(${_t} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
                                     PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
    target_link_libraries(${_t} PRIVATE ${P_DEPS} PUBLIC ${P_PUBLIC_DEPS})
    _probing_common(${_t})
  else()
    target_include_directories(${_t} INTERFACE ${CMAKE_CURRENT_SOURCE_DIR}/include)
    target_link_libraries(${_t} INTERFACE ${P_DEPS} ${P_PUBLIC_DEPS})
  endif()
  if(P_OUTPUT_NAME)
    set_target_properties(${_t} PROPERTIES OUTPUT_NAME ${P_OUTPUT_NAME})
  endif()
endfunction()

function(probing_cc_binary)
  cmake_parse_arguments(P "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${P_NAME} ${P_SRCS})
  target_link_libraries(${P_NAME} PRIVATE ${P_DEPS})
  _probing_common(${P_NAME})
endfunction()

function(probing_cc_test)
  if(NOT PROBING_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(P "" "NAME" "SRCS;DEPS;ARGS" ${ARGN})
  add_executable(${P_NAME} ${P_SRCS})
  target_link_libraries(${P_NAME} PRIVATE ${P_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${P_NAME} PRIVATE
      PROBING_SOURCE_DIR="${CMAKE_SOURCE_DIR}" PROBING_BINARY_DIR="${CMAKE_BINARY_DIR}")
  set_target_properties(${P_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  _probing_common(${P_NAME})
  add_test(NAME ${P_NAME} COMMAND ${P_NAME} ${P_ARGS})
  # Every unit test also runs in the sanitizer build (make test-sanitize selects this label).
  set_tests_properties(${P_NAME} PROPERTIES LABELS "unit;sanitize")
endfunction()

function(probing_cc_benchmark)
  if(NOT PROBING_BUILD_BENCHMARKS)
    return()
  endif()
  cmake_parse_arguments(P "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${P_NAME} ${P_SRCS})
  target_link_libraries(${P_NAME} PRIVATE ${P_DEPS} benchmark::benchmark)
  set_target_properties(${P_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
  _probing_common(${P_NAME})
  set_property(GLOBAL APPEND PROPERTY PROBING_BENCHMARKS ${P_NAME})
  if(PROBING_BUILD_TESTS)
    # Smoke test: every benchmark once, minimal time; numbers are not judged here.
    add_test(NAME ${P_NAME}_smoke
             COMMAND ${P_NAME} --benchmark_min_time=0.001 --benchmark_repetitions=1)
    set_tests_properties(${P_NAME}_smoke PROPERTIES LABELS smoke)
  endif()
endfunction()

# A fuzz target is one LLVMFuzzerTestOneInput in SRCS. The replay binary links a small main
# (tests/fuzz_replay_main.cc) that feeds it every file of CORPUS, so the corpus runs in ctest.
function(probing_cc_fuzzer)
  cmake_parse_arguments(P "" "NAME;CORPUS" "SRCS;DEPS" ${ARGN})
  if(PROBING_BUILD_TESTS)
    add_executable(${P_NAME}_replay ${P_SRCS} ${CMAKE_SOURCE_DIR}/tests/fuzz_replay_main.cc)
    target_link_libraries(${P_NAME}_replay PRIVATE ${P_DEPS})
    set_target_properties(${P_NAME}_replay PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
    _probing_common(${P_NAME}_replay)
    add_test(NAME ${P_NAME}_corpus COMMAND ${P_NAME}_replay ${P_CORPUS})
    set_tests_properties(${P_NAME}_corpus PROPERTIES LABELS "unit;sanitize")
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    add_executable(${P_NAME} ${P_SRCS})
    target_compile_options(${P_NAME} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${P_NAME} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${P_NAME} PRIVATE ${P_DEPS})
    set_target_properties(${P_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  endif()
endfunction()

# probing_embed_text(IN src/file.py NAME kConstant OUT gen/file_py.h)
# Generates header OUT holding IN's text as `inline constexpr const char* NAME` (EmbedText.cmake),
# so source that ships inside a binary (Python run in the target, the flame graph's script)
# stays a real file in the tree. IN and OUT are relative to the current source and binary dirs.
function(probing_embed_text)
  cmake_parse_arguments(E "" "IN;NAME;OUT" "" ${ARGN})
  set(in ${CMAKE_CURRENT_SOURCE_DIR}/${E_IN})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${E_OUT})
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DIN=${in} -DOUT=${out} -DNAME=${E_NAME}
            -P ${PROJECT_SOURCE_DIR}/cmake/EmbedText.cmake
    DEPENDS ${in} ${PROJECT_SOURCE_DIR}/cmake/EmbedText.cmake
    COMMENT "Embedding ${E_IN}")
endfunction()

# probing_embed_files(DIR app FILES index.html js/app.js NAME kWebApp OUT gen/web_app.h)
# Generates header OUT holding every file of FILES (relative to DIR) as
# `inline constexpr std::pair<std::string_view, std::string_view> NAME[]` of {name, text}
# (EmbedFiles.cmake): a folder of web files served from memory. DIR is relative to the current
# source dir, OUT to the current binary dir.
function(probing_embed_files)
  cmake_parse_arguments(E "" "DIR;NAME;OUT" "FILES" ${ARGN})
  set(dir ${CMAKE_CURRENT_SOURCE_DIR}/${E_DIR})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${E_OUT})
  set(deps "")
  foreach(f IN LISTS E_FILES)
    list(APPEND deps ${dir}/${f})
  endforeach()
  string(REPLACE ";" "," files "${E_FILES}")
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DDIR=${dir} -DFILES=${files} -DOUT=${out} -DNAME=${E_NAME}
            -P ${PROJECT_SOURCE_DIR}/cmake/EmbedFiles.cmake
    DEPENDS ${deps} ${PROJECT_SOURCE_DIR}/cmake/EmbedFiles.cmake
    COMMENT "Embedding ${E_DIR}")
endfunction()
