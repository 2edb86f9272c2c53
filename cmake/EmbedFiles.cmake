# cmake -DDIR=dir -DFILES=a.html,b.js -DOUT=header -DNAME=kName -P EmbedFiles.cmake
# Writes a header holding each file's text as a raw string literal, in an array of
# {name, text} pairs (names relative to DIR), so a program can serve a whole folder of web files
# from memory while they stay real files in the tree.
string(REPLACE "," ";" files "${FILES}")
set(body "")
foreach(f IN LISTS files)
  file(READ "${DIR}/${f}" text)
  if(text MATCHES "\\)PROBING_EMBED\"")
    message(FATAL_ERROR "${DIR}/${f} contains the raw string delimiter")
  endif()
  string(APPEND body "    {\"${f}\", R\"PROBING_EMBED(${text})PROBING_EMBED\"},\n")
endforeach()
file(WRITE "${OUT}.tmp"
  "// Generated from ${DIR} by cmake/EmbedFiles.cmake: edit those files, not this one.\n"
  "#pragma once\n"
  "#include <string_view>\n"
  "#include <utility>\n"
  "inline constexpr std::pair<std::string_view, std::string_view> ${NAME}[] = {\n"
  "${body}"
  "};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
