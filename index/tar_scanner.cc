// Why a hand-written tar walker instead of libarchive: the index needs the byte offset of
// every entry's data inside the uncompressed stream (that is what a ChunkRef points at),
// it must consume a stream pushed in pieces by our own decompressors in the same single
// pass that builds gzip checkpoints, and it must skip file data of an uncompressed tar
// without reading it. Archive libraries hide offsets and own the reading loop.

#include "index/tar_scanner.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <map>

#include "util/ascii.h"

namespace imagefs::index {
namespace {

constexpr size_t kBlock = 512;
// PAX and GNU long-name headers are kept in memory; bigger ones are refused.
constexpr uint64_t kMaxMetaSize = 16 << 20;

uint64_t RoundUp(uint64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

std::string Field(const uint8_t* block, size_t off, size_t len) {
  const char* p = reinterpret_cast<const char*>(block + off);
  size_t n = 0;
  while (n < len && p[n] != '\0') ++n;
  return std::string(p, n);
}

// A numeric header field: octal text (space/NUL padded) or GNU base-256 (first byte has
// the high bit: 0x80 positive, 0xff negative).
bool ParseNumber(const uint8_t* p, size_t len, int64_t& out) {
  if (p[0] & 0x80) {
    bool negative = p[0] == 0xff;
    uint64_t v = negative ? ~uint64_t{0} : 0;
    uint8_t first = negative ? p[0] : static_cast<uint8_t>(p[0] & 0x7f);
    for (size_t i = 0; i < len; ++i) {
      uint8_t b = i == 0 ? first : p[i];
      if (!negative && (v >> 56) != 0) return false;  // overflow
      v = (v << 8) | b;
    }
    out = static_cast<int64_t>(v);
    if (!negative && out < 0) return false;
    return true;
  }
  size_t i = 0;
  while (i < len && (p[i] == ' ' || p[i] == '\0')) ++i;
  uint64_t v = 0;
  bool any = false;
  for (; i < len; ++i) {
    if (p[i] == ' ' || p[i] == '\0') break;
    if (p[i] < '0' || p[i] > '7') return false;
    if (v >> 60) return false;
    v = v * 8 + (p[i] - '0');
    any = true;
  }
  for (; i < len; ++i) {
    if (p[i] != ' ' && p[i] != '\0') return false;
  }
  (void)any;  // an all-blank field reads as 0, as GNU tar does
  if (v > static_cast<uint64_t>(INT64_MAX)) return false;
  out = static_cast<int64_t>(v);
  return true;
}

bool ParseDecimal(std::string_view s, uint64_t& out) {
  auto n = ParseAsciiU64(s);
  if (n) out = *n;
  return n.has_value();
}

// "[-]SECONDS[.FRACTION]" as PAX writes mtime.
bool ParsePaxTime(std::string_view s, int64_t& sec, uint32_t& nsec) {
  bool negative = !s.empty() && s[0] == '-';
  if (negative) s.remove_prefix(1);
  std::string_view whole = s, frac;
  if (auto dot = s.find('.'); dot != std::string_view::npos) {
    whole = s.substr(0, dot);
    frac = s.substr(dot + 1);
  }
  uint64_t w;
  if (!ParseDecimal(whole, w) || w > static_cast<uint64_t>(INT64_MAX)) return false;
  uint64_t ns = 0;
  for (size_t i = 0; i < 9; ++i) {
    char c = i < frac.size() ? frac[i] : '0';
    if (c < '0' || c > '9') return false;
    ns = ns * 10 + static_cast<uint64_t>(c - '0');
  }
  for (size_t i = 9; i < frac.size(); ++i) {
    if (frac[i] < '0' || frac[i] > '9') return false;
  }
  int64_t sec_v = static_cast<int64_t>(w);
  if (negative && ns > 0) {
    sec = -sec_v - 1;
    nsec = static_cast<uint32_t>(1000000000 - ns);
  } else {
    sec = negative ? -sec_v : sec_v;
    nsec = static_cast<uint32_t>(ns);
  }
  return true;
}

bool IsZeroBlock(const uint8_t* b) {
  return std::all_of(b, b + kBlock, [](uint8_t c) { return c == 0; });
}

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

}  // namespace

Result<std::string> NormalizeTarPath(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) {
    return Status::Corruption("tar entry " + Quote(path) + ": path holds a NUL byte");
  }
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (parts.empty()) {
        return Status::Corruption("tar entry " + Quote(path) + ": path escapes the layer root");
      }
      parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out.push_back('/');
    out.append(parts[i]);
  }
  return out;
}

TarScanner::TarScanner(EntryFn on_entry) : on_entry_(std::move(on_entry)) {}

Status TarScanner::Fail(Status st) {
  state_ = State::kFailed;
  error_ = st;
  return st;
}

Status TarScanner::Feed(std::span<const uint8_t> data) {
  while (!data.empty()) {
    switch (state_) {
      case State::kFailed:
        return error_;
      case State::kEnd:
        offset_ += data.size();
        return Status::Ok();
      case State::kHeader: {
        size_t n = std::min(data.size(), kBlock - block_fill_);
        std::memcpy(block_ + block_fill_, data.data(), n);
        block_fill_ += n;
        offset_ += n;
        data = data.subspan(n);
        if (block_fill_ == kBlock) {
          block_fill_ = 0;
          Status st = ParseHeader();
          if (!st.ok()) return Fail(st);
        }
        break;
      }
      case State::kData: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(data.size(), remaining_));
        remaining_ -= n;
        offset_ += n;
        data = data.subspan(n);
        if (remaining_ == 0) state_ = State::kHeader;
        break;
      }
      case State::kMeta: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(data.size(), remaining_));
        size_t keep = static_cast<size_t>(
            std::min<uint64_t>(n, meta_size_ > meta_.size() ? meta_size_ - meta_.size() : 0));
        meta_.append(reinterpret_cast<const char*>(data.data()), keep);
        remaining_ -= n;
        offset_ += n;
        data = data.subspan(n);
        if (remaining_ == 0) {
          state_ = State::kHeader;
          Status st = FinishMeta();
          if (!st.ok()) return Fail(st);
        }
        break;
      }
    }
  }
  return Status::Ok();
}

uint64_t TarScanner::SkippableBytes() const {
  return state_ == State::kData ? remaining_ : 0;
}

Status TarScanner::Skip(uint64_t n) {
  if (state_ == State::kFailed) return error_;
  if (n > SkippableBytes()) return Status::Internal("TarScanner::Skip past the entry's data");
  remaining_ -= n;
  offset_ += n;
  if (state_ == State::kData && remaining_ == 0) state_ = State::kHeader;
  return Status::Ok();
}

Status TarScanner::Finish() {
  switch (state_) {
    case State::kFailed:
      return error_;
    case State::kEnd:
      return Status::Ok();
    case State::kHeader:
      if (block_fill_ == 0 && !have_long_name_ && !have_long_link_ && pax_.empty()) {
        return Status::Ok();
      }
      break;
    default:
      break;
  }
  return Fail(Status::Corruption("truncated tar: the stream ends inside an entry at offset " +
                                 std::to_string(offset_)));
}

Status TarScanner::FinishMeta() {
  switch (meta_type_) {
    case 'L':
      have_long_name_ = true;
      long_name_ = meta_.substr(0, std::min(meta_.size(), meta_.find('\0')));
      break;
    case 'K':
      have_long_link_ = true;
      long_link_ = meta_.substr(0, std::min(meta_.size(), meta_.find('\0')));
      break;
    case 'x':
    case 'g': {
      auto& target = meta_type_ == 'x' ? pax_ : pax_global_;
      std::string_view rest = meta_;
      while (!rest.empty()) {
        size_t space = rest.find(' ');
        uint64_t len;
        if (space == std::string_view::npos || !ParseDecimal(rest.substr(0, space), len) ||
            len <= space + 1 || len > rest.size() || rest[len - 1] != '\n') {
          return Status::Corruption("tar: bad PAX record at offset " +
                                    std::to_string(pending_header_offset_));
        }
        std::string_view record = rest.substr(space + 1, len - space - 2);
        rest.remove_prefix(len);
        size_t eq = record.find('=');
        if (eq == std::string_view::npos) {
          return Status::Corruption("tar: PAX record without '=' at offset " +
                                    std::to_string(pending_header_offset_));
        }
        std::string key(record.substr(0, eq));
        std::string value(record.substr(eq + 1));
        auto it = std::find_if(target.begin(), target.end(),
                               [&](const auto& kv) { return kv.first == key; });
        if (it != target.end()) {
          it->second = std::move(value);
        } else {
          target.emplace_back(std::move(key), std::move(value));
        }
      }
      break;
    }
    default:
      break;
  }
  meta_.clear();
  meta_.shrink_to_fit();
  return Status::Ok();
}

Status TarScanner::ParseHeader() {
  const uint64_t header_offset = offset_ - kBlock;
  if (IsZeroBlock(block_)) {
    if (++zero_blocks_ == 2) state_ = State::kEnd;
    return Status::Ok();
  }
  zero_blocks_ = 0;
  const uint64_t first_offset =
      pending_has_header_offset_ ? pending_header_offset_ : header_offset;
  auto where = [&](std::string_view name) {
    return "tar entry " + Quote(name) + " at offset " + std::to_string(header_offset);
  };
  std::string raw_name = Field(block_, 0, 100);

  // Checksum: the sum of the header bytes with the checksum field read as spaces.
  // Some old tars summed signed chars; accept either.
  int64_t stored;
  if (!ParseNumber(block_ + 148, 8, stored)) {
    return Status::Corruption(where(raw_name) + ": unreadable header checksum");
  }
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    uint8_t b = (i >= 148 && i < 156) ? ' ' : block_[i];
    unsigned_sum += b;
    signed_sum += static_cast<int8_t>(b);
  }
  if (stored != unsigned_sum && stored != signed_sum) {
    return Status::Corruption(where(raw_name) + ": header checksum mismatch (stored " +
                              std::to_string(stored) + ", computed " +
                              std::to_string(unsigned_sum) + ")");
  }

  char typeflag = static_cast<char>(block_[156]);
  int64_t mode, uid, gid, size, mtime, devmajor = 0, devminor = 0;
  if (!ParseNumber(block_ + 100, 8, mode) || !ParseNumber(block_ + 108, 8, uid) ||
      !ParseNumber(block_ + 116, 8, gid) || !ParseNumber(block_ + 124, 12, size) ||
      !ParseNumber(block_ + 136, 12, mtime)) {
    return Status::Corruption(where(raw_name) + ": bad numeric header field");
  }
  const bool posix_ustar = std::memcmp(block_ + 257, "ustar\0", 6) == 0;
  const bool gnu = std::memcmp(block_ + 257, "ustar  \0", 8) == 0;
  if (posix_ustar || gnu) {
    if (!ParseNumber(block_ + 329, 8, devmajor) || !ParseNumber(block_ + 337, 8, devminor)) {
      devmajor = devminor = 0;  // some writers leave garbage here for non-devices
    }
  }
  if (size < 0) return Status::Corruption(where(raw_name) + ": negative size");

  // Extension headers: remember their content for the next real entry.
  if (typeflag == 'L' || typeflag == 'K' || typeflag == 'x' || typeflag == 'g' ||
      typeflag == 'X') {
    if (static_cast<uint64_t>(size) > kMaxMetaSize) {
      return Status::Unsupported(where(raw_name) + ": extension header of " +
                                 std::to_string(size) + " bytes is too large");
    }
    if (!pending_has_header_offset_ && typeflag != 'g') {
      pending_has_header_offset_ = true;
      pending_header_offset_ = header_offset;
    }
    meta_type_ = typeflag == 'X' ? 'x' : typeflag;
    meta_size_ = static_cast<uint64_t>(size);
    meta_.clear();
    meta_.reserve(meta_size_);
    remaining_ = RoundUp(meta_size_);
    if (remaining_ == 0) return FinishMeta();
    state_ = State::kMeta;
    return Status::Ok();
  }

  // The effective PAX keywords: per-entry over global.
  std::map<std::string, std::string, std::less<>> pax;
  for (const auto& [k, v] : pax_global_) pax[k] = v;
  for (const auto& [k, v] : pax_) pax[k] = v;
  auto pax_value = [&](std::string_view key) -> const std::string* {
    auto it = pax.find(key);
    return it == pax.end() || it->second.empty() ? nullptr : &it->second;
  };

  std::string name;
  if (const std::string* p = pax_value("path")) {
    name = *p;
  } else if (have_long_name_) {
    name = long_name_;
  } else {
    name = raw_name;
    std::string prefix = posix_ustar ? Field(block_, 345, 155) : std::string();
    if (!prefix.empty()) name = prefix + "/" + name;
  }
  std::string linkname;
  if (const std::string* p = pax_value("linkpath")) {
    linkname = *p;
  } else if (have_long_link_) {
    linkname = long_link_;
  } else {
    linkname = Field(block_, 157, 100);
  }

  auto sparse_key = pax.lower_bound("GNU.sparse.");
  bool pax_sparse = sparse_key != pax.end() && sparse_key->first.starts_with("GNU.sparse.");
  if (typeflag == 'S' || pax_sparse) {
    return Status::Unsupported(where(name) +
                               ": GNU sparse files are not supported (re-create the layer "
                               "without --sparse)");
  }
  if (typeflag == 'M' || typeflag == 'N') {
    return Status::Unsupported(where(name) + ": GNU multi-volume / old long-name entries (type " +
                               std::string(1, typeflag) + ") are not supported");
  }

  uint64_t data_size = static_cast<uint64_t>(size);
  if (const std::string* p = pax_value("size")) {
    if (!ParseDecimal(*p, data_size)) {
      return Status::Corruption(where(name) + ": bad PAX size " + Quote(*p));
    }
  }

  TarEntry entry;
  bool emit = true;
  switch (typeflag) {
    case '0':
    case '\0':
    case '7':
      entry.type = TarType::kRegular;
      // Pre-POSIX tars mark directories by a trailing slash only.
      if (!name.empty() && name.back() == '/') entry.type = TarType::kDirectory;
      break;
    case '1': entry.type = TarType::kHardLink; break;
    case '2': entry.type = TarType::kSymlink; break;
    case '3': entry.type = TarType::kCharDevice; break;
    case '4': entry.type = TarType::kBlockDevice; break;
    case '5':
    case 'D':  // GNU dump directory: a directory whose data lists its contents
      entry.type = TarType::kDirectory;
      break;
    case '6': entry.type = TarType::kFifo; break;
    case 'V':  // GNU volume label: not a file
      emit = false;
      break;
    default:
      // POSIX: an unrecognized type is read as a regular file.
      entry.type = TarType::kRegular;
      break;
  }

  if (emit) {
    ASSIGN_OR_RETURN(entry.path, NormalizeTarPath(name));
    entry.mode = static_cast<uint32_t>(mode) & 07777;
    entry.uid = static_cast<uint32_t>(uid);
    entry.gid = static_cast<uint32_t>(gid);
    entry.uname = Field(block_, 265, 32);
    entry.gname = Field(block_, 297, 32);
    entry.mtime_sec = mtime;
    if (const std::string* p = pax_value("uid")) {
      uint64_t v;
      if (!ParseDecimal(*p, v)) return Status::Corruption(where(name) + ": bad PAX uid");
      entry.uid = static_cast<uint32_t>(v);
    }
    if (const std::string* p = pax_value("gid")) {
      uint64_t v;
      if (!ParseDecimal(*p, v)) return Status::Corruption(where(name) + ": bad PAX gid");
      entry.gid = static_cast<uint32_t>(v);
    }
    if (const std::string* p = pax_value("uname")) entry.uname = *p;
    if (const std::string* p = pax_value("gname")) entry.gname = *p;
    if (const std::string* p = pax_value("mtime")) {
      if (!ParsePaxTime(*p, entry.mtime_sec, entry.mtime_nsec)) {
        return Status::Corruption(where(name) + ": bad PAX mtime " + Quote(*p));
      }
    }
    if (entry.type == TarType::kCharDevice || entry.type == TarType::kBlockDevice) {
      entry.dev_major = static_cast<uint32_t>(devmajor);
      entry.dev_minor = static_cast<uint32_t>(devminor);
    }
    if (entry.type == TarType::kRegular) entry.size = data_size;
    if (entry.type == TarType::kHardLink) {
      auto target = NormalizeTarPath(linkname);
      if (!target.ok()) {
        return Status::Corruption(where(name) + ": hard link target " + Quote(linkname) +
                                  " escapes the layer root");
      }
      if (target->empty()) {
        return Status::Corruption(where(name) + ": hard link to the root directory");
      }
      entry.linkname = std::move(*target);
    } else if (entry.type == TarType::kSymlink) {
      entry.linkname = std::move(linkname);
    }
    constexpr std::string_view kXattr = "SCHILY.xattr.";
    for (auto it = pax.lower_bound(kXattr); it != pax.end() && it->first.starts_with(kXattr);
         ++it) {
      entry.xattrs.emplace_back(it->first.substr(kXattr.size()), it->second);
    }
    entry.header_offset = first_offset;
    entry.data_offset = offset_;
  }

  // The extensions applied to this entry only.
  have_long_name_ = have_long_link_ = false;
  long_name_.clear();
  long_link_.clear();
  pax_.clear();
  pending_has_header_offset_ = false;

  // Header-only types carry no data whatever their size field says (as Go's archive/tar,
  // which writes most layers, reads them).
  if (emit && entry.type != TarType::kRegular && typeflag != 'D') data_size = 0;
  remaining_ = RoundUp(data_size);
  state_ = remaining_ > 0 ? State::kData : State::kHeader;
  if (emit) {
    ++entry_count_;
    RETURN_IF_ERROR(on_entry_(entry));
  }
  return Status::Ok();
}

}  // namespace imagefs::index
