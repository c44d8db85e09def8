#include "store/elf.h"

#include <elf.h>

#include <cstring>
#include <string_view>

namespace imagefs::store {
namespace {

// Caps on what one file may make us read.
constexpr uint64_t kMaxPhdrBytes = 64 << 10;
constexpr uint64_t kMaxInterp = 4096;
constexpr uint64_t kMaxDynamicBytes = 1 << 20;
constexpr uint64_t kMaxStrtab = 4 << 20;
constexpr size_t kMaxNeeded = 1024;

// The width-independent parts of the headers we use.
struct ElfPhdrInfo {
  uint32_t type = 0;
  uint64_t offset = 0, vaddr = 0, filesz = 0;
};

// [offset, offset + len) lies inside a file of `size` bytes (no overflow).
bool ElfInFile(uint64_t offset, uint64_t len, uint64_t size) {
  return offset <= size && len <= size - offset;
}

Status ElfReadExact(const ElfReadAt& read, uint64_t size, uint64_t offset, std::span<uint8_t> out) {
  if (!ElfInFile(offset, out.size(), size)) {
    return Status::Corruption("ELF: " + std::to_string(out.size()) + " bytes at " +
                              std::to_string(offset) + " are past the end of the file");
  }
  size_t done = 0;
  while (done < out.size()) {
    ASSIGN_OR_RETURN(size_t n, read(offset + done, out.subspan(done)));
    if (n == 0) return Status::Corruption("ELF: the file is shorter than its size");
    done += n;
  }
  return Status::Ok();
}

template <typename T>
T ElfLoad(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <typename Ehdr, typename Phdr, typename Dyn>
Result<ElfDeps> ElfParse(const ElfReadAt& read, uint64_t size) {
  ElfDeps deps;
  deps.is64 = sizeof(Ehdr) == sizeof(Elf64_Ehdr);
  std::vector<uint8_t> ebuf(sizeof(Ehdr));
  RETURN_IF_ERROR(ElfReadExact(read, size, 0, ebuf));
  const Ehdr eh = ElfLoad<Ehdr>(ebuf.data());
  deps.machine = eh.e_machine;
  if (eh.e_phnum == 0) return deps;
  if (eh.e_phentsize < sizeof(Phdr))
    return Status::Corruption("ELF: program header entries too small");
  const uint64_t ph_bytes = uint64_t{eh.e_phnum} * eh.e_phentsize;
  if (ph_bytes > kMaxPhdrBytes) return Status::Corruption("ELF: too many program headers");
  std::vector<uint8_t> pbuf(ph_bytes);
  RETURN_IF_ERROR(ElfReadExact(read, size, eh.e_phoff, pbuf));
  std::vector<ElfPhdrInfo> phdrs;
  for (uint64_t i = 0; i < eh.e_phnum; ++i) {
    const Phdr p = ElfLoad<Phdr>(pbuf.data() + i * eh.e_phentsize);
    phdrs.push_back({p.p_type, p.p_offset, p.p_vaddr, p.p_filesz});
  }
  const ElfPhdrInfo* dynamic = nullptr;
  for (const ElfPhdrInfo& p : phdrs) {
    if (p.type == PT_INTERP && deps.interp.empty()) {
      if (p.filesz == 0 || p.filesz > kMaxInterp)
        return Status::Corruption("ELF: bad PT_INTERP size");
      std::string s(p.filesz, '\0');
      RETURN_IF_ERROR(
          ElfReadExact(read, size, p.offset, {reinterpret_cast<uint8_t*>(s.data()), s.size()}));
      deps.interp = s.substr(0, s.find('\0'));
    } else if (p.type == PT_DYNAMIC && dynamic == nullptr) {
      dynamic = &p;
    }
  }
  if (dynamic == nullptr) return deps;
  const uint64_t dyn_bytes = std::min(dynamic->filesz, kMaxDynamicBytes);
  if (!ElfInFile(dynamic->offset, dyn_bytes, size))
    return Status::Corruption("ELF: PT_DYNAMIC past the end");
  std::vector<uint8_t> dbuf(dyn_bytes);
  RETURN_IF_ERROR(ElfReadExact(read, size, dynamic->offset, dbuf));
  uint64_t strtab = 0, strsz = 0;
  bool have_strtab = false;
  std::vector<uint64_t> needed, runpath, rpath;
  for (uint64_t off = 0; off + sizeof(Dyn) <= dbuf.size(); off += sizeof(Dyn)) {
    const Dyn d = ElfLoad<Dyn>(dbuf.data() + off);
    const uint64_t tag = static_cast<uint64_t>(d.d_tag);
    const uint64_t val = d.d_un.d_val;
    if (tag == DT_NULL) break;
    if (tag == DT_STRTAB) {
      strtab = val;
      have_strtab = true;
    } else if (tag == DT_STRSZ) {
      strsz = val;
    } else if (tag == DT_NEEDED) {
      if (needed.size() >= kMaxNeeded) return Status::Corruption("ELF: too many DT_NEEDED");
      needed.push_back(val);
    } else if (tag == DT_RUNPATH) {
      runpath.push_back(val);
    } else if (tag == DT_RPATH) {
      rpath.push_back(val);
    }
  }
  if (needed.empty() && runpath.empty() && rpath.empty()) return deps;
  if (!have_strtab || strsz == 0) return Status::Corruption("ELF: no dynamic string table");
  // DT_STRTAB is an address: find the loaded segment holding it.
  uint64_t str_off = 0;
  bool mapped = false;
  for (const ElfPhdrInfo& p : phdrs) {
    if (p.type != PT_LOAD || strtab < p.vaddr) continue;
    const uint64_t delta = strtab - p.vaddr;
    if (delta >= p.filesz) continue;
    str_off = p.offset + delta;
    strsz = std::min(strsz, p.filesz - delta);
    mapped = true;
    break;
  }
  if (!mapped) return Status::Corruption("ELF: DT_STRTAB is outside every loaded segment");
  strsz = std::min(strsz, kMaxStrtab);
  if (str_off > size) return Status::Corruption("ELF: DT_STRTAB past the end");
  strsz = std::min(strsz, size - str_off);
  std::string table(strsz, '\0');
  RETURN_IF_ERROR(
      ElfReadExact(read, size, str_off, {reinterpret_cast<uint8_t*>(table.data()), table.size()}));
  auto string_at = [&](uint64_t at) -> Result<std::string> {
    if (at >= table.size())
      return Status::Corruption("ELF: a string offset is past the string table");
    const size_t end = table.find('\0', at);
    if (end == std::string::npos) return Status::Corruption("ELF: an unterminated string");
    return table.substr(at, end - at);
  };
  for (uint64_t at : needed) {
    ASSIGN_OR_RETURN(std::string name, string_at(at));
    if (!name.empty()) deps.needed.push_back(std::move(name));
  }
  for (uint64_t at : runpath.empty() ? rpath : runpath) {
    ASSIGN_OR_RETURN(std::string dirs, string_at(at));
    std::string_view rest = dirs;
    while (!rest.empty()) {
      const size_t colon = rest.find(':');
      std::string_view dir = rest.substr(0, colon);
      if (!dir.empty()) deps.runpath.emplace_back(dir);
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  return deps;
}

}  // namespace

bool LooksLikeElf(std::span<const uint8_t> head) {
  return head.size() >= SELFMAG && std::memcmp(head.data(), ELFMAG, SELFMAG) == 0;
}

Result<ElfDeps> ReadElfDeps(const ElfReadAt& read, uint64_t size) {
  uint8_t ident[EI_NIDENT];
  if (size < EI_NIDENT) return Status::InvalidArgument("not an ELF file (too short)");
  RETURN_IF_ERROR(ElfReadExact(read, size, 0, ident));
  if (!LooksLikeElf(ident)) return Status::InvalidArgument("not an ELF file");
  if (ident[EI_DATA] != ELFDATA2LSB) return Status::InvalidArgument("ELF: not little-endian");
  if (ident[EI_CLASS] == ELFCLASS64) return ElfParse<Elf64_Ehdr, Elf64_Phdr, Elf64_Dyn>(read, size);
  if (ident[EI_CLASS] == ELFCLASS32) return ElfParse<Elf32_Ehdr, Elf32_Phdr, Elf32_Dyn>(read, size);
  return Status::InvalidArgument("ELF: unknown class");
}

std::string ShebangInterpreter(std::span<const uint8_t> head) {
  if (head.size() < 3 || head[0] != '#' || head[1] != '!') return "";
  std::string_view line(reinterpret_cast<const char*>(head.data()) + 2, head.size() - 2);
  line = line.substr(0, line.find('\n'));
  const size_t start = line.find_first_not_of(" \t");
  if (start == std::string_view::npos) return "";
  line.remove_prefix(start);
  return std::string(line.substr(0, line.find_first_of(" \t\r")));
}

}  // namespace imagefs::store
