#pragma once

// Builds small ELF files for tests: a PT_LOAD over the whole file, optional PT_INTERP and
// a PT_DYNAMIC with DT_NEEDED / DT_RUNPATH entries and their string table.

#include <elf.h>

#include <cstring>
#include <string>
#include <vector>

namespace imagefs::store::test {

struct ElfSpec {
  bool is64 = true;
  uint16_t machine = EM_X86_64;
  std::string interp;
  std::vector<std::string> needed;
  std::string runpath;  // "" for none
  bool use_rpath = false;
  size_t padding = 0;   // zero bytes after the headers (a bigger file)
};

template <typename Ehdr, typename Phdr, typename Dyn>
std::string BuildElfOf(const ElfSpec& spec, unsigned char elf_class) {
  const uint64_t base = 0x400000;
  std::string strtab(1, '\0');
  auto add_string = [&](const std::string& s) {
    const uint64_t at = strtab.size();
    strtab += s;
    strtab.push_back('\0');
    return at;
  };
  std::vector<Dyn> dyns;
  for (const std::string& n : spec.needed) {
    Dyn d{};
    d.d_tag = DT_NEEDED;
    d.d_un.d_val = add_string(n);
    dyns.push_back(d);
  }
  if (!spec.runpath.empty()) {
    Dyn d{};
    d.d_tag = spec.use_rpath ? DT_RPATH : DT_RUNPATH;
    d.d_un.d_val = add_string(spec.runpath);
    dyns.push_back(d);
  }
  const bool dynamic = !dyns.empty();
  const int phnum = 1 + (spec.interp.empty() ? 0 : 1) + (dynamic ? 1 : 0);
  const uint64_t ph_off = sizeof(Ehdr);
  uint64_t off = ph_off + phnum * sizeof(Phdr);
  const uint64_t interp_off = off;
  if (!spec.interp.empty()) off += spec.interp.size() + 1;
  const uint64_t str_off = off;
  off += strtab.size();
  off = (off + 7) & ~uint64_t{7};
  const uint64_t dyn_off = off;
  if (dynamic) {
    Dyn d{};
    d.d_tag = DT_STRTAB;
    d.d_un.d_val = base + str_off;
    dyns.push_back(d);
    d.d_tag = DT_STRSZ;
    d.d_un.d_val = strtab.size();
    dyns.push_back(d);
    d.d_tag = DT_NULL;
    d.d_un.d_val = 0;
    dyns.push_back(d);
    off += dyns.size() * sizeof(Dyn);
  }
  const uint64_t total = off + spec.padding;
  std::string out(total, '\0');
  Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = elf_class;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_DYN;
  eh.e_machine = spec.machine;
  eh.e_version = EV_CURRENT;
  eh.e_phoff = ph_off;
  eh.e_ehsize = sizeof(Ehdr);
  eh.e_phentsize = sizeof(Phdr);
  eh.e_phnum = phnum;
  std::memcpy(out.data(), &eh, sizeof eh);
  std::vector<Phdr> phdrs;
  Phdr load{};
  load.p_type = PT_LOAD;
  load.p_offset = 0;
  load.p_vaddr = base;
  load.p_filesz = total;
  load.p_memsz = total;
  phdrs.push_back(load);
  if (!spec.interp.empty()) {
    Phdr p{};
    p.p_type = PT_INTERP;
    p.p_offset = interp_off;
    p.p_filesz = spec.interp.size() + 1;
    phdrs.push_back(p);
    std::memcpy(out.data() + interp_off, spec.interp.data(), spec.interp.size());
  }
  if (dynamic) {
    Phdr p{};
    p.p_type = PT_DYNAMIC;
    p.p_offset = dyn_off;
    p.p_vaddr = base + dyn_off;
    p.p_filesz = dyns.size() * sizeof(Dyn);
    phdrs.push_back(p);
    std::memcpy(out.data() + dyn_off, dyns.data(), dyns.size() * sizeof(Dyn));
  }
  std::memcpy(out.data() + ph_off, phdrs.data(), phdrs.size() * sizeof(Phdr));
  std::memcpy(out.data() + str_off, strtab.data(), strtab.size());
  return out;
}

inline std::string BuildElf(const ElfSpec& spec) {
  return spec.is64 ? BuildElfOf<Elf64_Ehdr, Elf64_Phdr, Elf64_Dyn>(spec, ELFCLASS64)
                   : BuildElfOf<Elf32_Ehdr, Elf32_Phdr, Elf32_Dyn>(spec, ELFCLASS32);
}

}  // namespace imagefs::store::test
