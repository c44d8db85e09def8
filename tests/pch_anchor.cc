// The translation unit that owns the test programs' precompiled headers (tests/CMakeLists.txt).
