# cmake -DIN=file -DOUT=header -DNAME=kName -P EmbedText.cmake
# Writes a header holding the file's text as one raw string literal, so Python source that runs
# inside the target stays a real .py file in the tree.
file(READ "${IN}" text)
if(text MATCHES "\\)PROBING_EMBED\"")
  message(FATAL_ERROR "${IN} contains the raw string delimiter")
endif()
file(WRITE "${OUT}.tmp"
  "// Generated from ${IN} by cmake/EmbedText.cmake: edit that file, not this one.\n"
  "#pragma once\n"
  "inline constexpr const char* ${NAME} = R\"PROBING_EMBED(${text})PROBING_EMBED\";\n")
file(RENAME "${OUT}.tmp" "${OUT}")
