# embed.cmake - turn a file into a C array, at build time, with CMake alone:
#   cmake -DIN=index.html -DOUT=ui_page.c -DNAME=ui_page -P embed.cmake
# defines  const unsigned char NAME[]  (the bytes, no NUL added) and
# const size_t NAME_len. proxy/CMakeLists.txt runs it whenever IN changes.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR n "${n} / 2")
# 16 bytes a line, then each byte as 0xHH.
string(REGEX REPLACE "(................................)" "\\1\n" hex "${hex}")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
file(WRITE "${OUT}.tmp"
     "/* Generated from ${IN} by embed.cmake: do not edit. */\n"
     "#include <stddef.h>\n"
     "extern const unsigned char ${NAME}[];\n"
     "extern const size_t ${NAME}_len;\n"
     "const unsigned char ${NAME}[] = {\n${hex}0x00};\n"
     "const size_t ${NAME}_len = ${n};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
