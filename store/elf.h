#pragma once

// A small ELF reader for prefetch: what a dynamically linked file needs before it can run
// (its interpreter, PT_INTERP, and its DT_NEEDED libraries with the DT_RUNPATH/DT_RPATH
// dirs to find them in). 32- and 64-bit little-endian files; anything else is
// kInvalidArgument ("not an ELF file we read") or kCorruption.
//
// Every offset and size taken from the file is checked against the file's size and
// against fixed caps before anything is read, so truncated or hostile files only give an
// error: bytes are read through a callback, never outside [0, size).

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "util/status.h"

namespace imagefs::store {

struct ElfDeps {
  bool is64 = true;
  uint16_t machine = 0;              // e_machine (EM_X86_64, EM_AARCH64, ...)
  std::string interp;                // PT_INTERP; "" for static files and libraries
  std::vector<std::string> needed;   // DT_NEEDED, in order
  std::vector<std::string> runpath;  // DT_RUNPATH dirs, else DT_RPATH's (split on ':')
};

// Reads up to out.size() bytes at offset (short only at the end of the file).
using ElfReadAt = std::function<Result<size_t>(uint64_t offset, std::span<uint8_t> out)>;

// Whether head (a file's first bytes) starts with the ELF magic.
bool LooksLikeElf(std::span<const uint8_t> head);

// The dependencies of the ELF file of `size` bytes that `read` reads.
Result<ElfDeps> ReadElfDeps(const ElfReadAt& read, uint64_t size);

// The interpreter a "#!" script names (its first word), or "" when head is no such script.
std::string ShebangInterpreter(std::span<const uint8_t> head);

}  // namespace imagefs::store
