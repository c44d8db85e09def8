#include "fetch/streamed_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <deque>
#include <future>
#include <thread>
#include <vector>

#include "util/file.h"
#include "util/log.h"

namespace imagefs::fetch {
namespace {

// The first window is small so the scan can start after one round trip; windows then
// double up to kMaxWindow, each fetched as parts requested together.
constexpr uint64_t kFirstWindow = 1 << 20;
constexpr uint64_t kMaxWindow = 16 << 20;
constexpr uint64_t kPart = 4 << 20;
constexpr size_t kWindowsInFlight = 2;
// keep_trying: the longest pause between two tries of a window.
constexpr int64_t kMaxRetryPauseMs = 5000;

// Failures that may pass: the registry unreachable, slow or busy.
bool MayPass(const Status& st) {
  return st.code() == Code::kUnavailable || st.code() == Code::kTimeout;
}

Result<UniqueFd> OpenUnnamedFile(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (fd) return fd;
  // Filesystems without O_TMPFILE: a named file, unlinked at once.
  std::string path = dir + "/stream-XXXXXX";
  int raw = ::mkostemp(path.data(), O_CLOEXEC);
  if (raw < 0) return Status::FromErrno(errno, "creating a temporary file in " + dir);
  ::unlink(path.c_str());
  return UniqueFd(raw);
}

// Fetches [offset, offset + len) of `source` as parts requested together.
Status FetchWindow(BlobSource& source, uint64_t offset, std::vector<uint8_t>& buf) {
  std::vector<ByteRange> parts;
  std::vector<std::span<uint8_t>> outs;
  for (uint64_t off = 0; off < buf.size(); off += kPart) {
    const uint64_t len = std::min<uint64_t>(kPart, buf.size() - off);
    parts.push_back({offset + off, len});
    outs.emplace_back(buf.data() + off, len);
  }
  return source.ReadRanges(parts, outs);
}

}  // namespace

Result<std::unique_ptr<StreamedBlobSource>> StreamedBlobSource::Start(
    std::unique_ptr<BlobSource> inner, Digest expected, const std::string& tmp_dir,
    bool keep_trying) {
  (void)MakeDirs(tmp_dir, 0700);  // a fresh --root has none yet; a failure shows below
  ASSIGN_OR_RETURN(UniqueFd fd, OpenUnnamedFile(tmp_dir));
  return std::unique_ptr<StreamedBlobSource>(new StreamedBlobSource(
      std::move(inner), std::move(expected), std::move(fd), keep_trying));
}

StreamedBlobSource::StreamedBlobSource(std::unique_ptr<BlobSource> inner, Digest expected,
                                       UniqueFd fd, bool keep_trying)
    : inner_(std::move(inner)),
      expected_(std::move(expected)),
      fd_(std::move(fd)),
      size_(inner_->Size()),
      keep_trying_(keep_trying),
      thread_([this] { Run(); }) {}

StreamedBlobSource::~StreamedBlobSource() {
  stop_ = true;
  thread_.join();
}

void StreamedBlobSource::End(State state, Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kRunning) return;  // the first end stands (Cancel)
    state_ = state;
    status_ = std::move(status);
  }
  cv_.notify_all();
}

void StreamedBlobSource::Cancel() {
  stop_ = true;
  End(State::kFailed, Status::Unavailable(Describe() + ": streaming stopped"));
}

void StreamedBlobSource::Run() {
  using Fetched = std::pair<Status, std::shared_ptr<std::vector<uint8_t>>>;
  Sha256 hash;
  uint64_t offset = 0;
  uint64_t window = kFirstWindow;
  auto fetch = [this](uint64_t at, uint64_t len) {
    auto buf = std::make_shared<std::vector<uint8_t>>(len);
    return std::async(std::launch::async, [this, at, buf]() -> Fetched {
      return {FetchWindow(*inner_, at, *buf), buf};
    });
  };
  // Two windows in flight: the next is already arriving while one is written, and the
  // connection never idles for a round trip between windows.
  std::deque<std::future<Fetched>> in_flight;
  uint64_t requested = 0;
  int retries = 0;  // of the window at `offset`, with keep_trying_
  auto request_more = [&] {
    while (in_flight.size() < kWindowsInFlight && requested < size_ && !stop_) {
      const uint64_t len = std::min(window, size_ - requested);
      in_flight.push_back(fetch(requested, len));
      requested += len;
      window = std::min(window * 2, kMaxWindow);
    }
  };
  auto drain = [&] {
    for (auto& f : in_flight) f.wait();
  };
  request_more();
  while (offset < size_) {
    if (in_flight.empty()) {  // stopped
      return End(State::kFailed, Status::Unavailable(Describe() + ": streaming stopped"));
    }
    auto [status, buf] = in_flight.front().get();
    in_flight.pop_front();
    if (!status.ok() && keep_trying_ && MayPass(status) && !stop_) {
      if (retries++ == 0) {
        LOG(kWarn) << Describe() << ": " << status.message()
                   << " (asking again until it answers)";
      }
      const auto pause = std::min(std::chrono::milliseconds(1000) * retries,
                                  std::chrono::milliseconds(kMaxRetryPauseMs));
      for (auto waited = std::chrono::milliseconds(0); waited < pause && !stop_;
           waited += std::chrono::milliseconds(50)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      in_flight.push_front(fetch(offset, buf->size()));
      continue;
    }
    if (!status.ok()) {
      drain();
      return End(State::kFailed, std::move(status));
    }
    if (retries > 0) LOG(kInfo) << Describe() << ": streaming again";
    retries = 0;
    const uint64_t got_end = offset + buf->size();
    request_more();  // before this window is written
    hash.Update(std::span<const uint8_t>(*buf));
    Status wrote = PwriteAll(fd_.get(), *buf, offset, "the streamed copy");
    if (!wrote.ok()) {
      LOG(kWarn) << Describe() << ": can't keep the streamed copy (" << wrote.message()
                 << "); reading it from its source instead";
      drain();
      return End(State::kLocalFailed, Status::Ok());
    }
    offset = got_end;
    {
      std::lock_guard<std::mutex> lock(mu_);
      available_ = offset;
    }
    cv_.notify_all();
    if (stop_) {
      drain();
      return End(State::kFailed, Status::Unavailable(Describe() + ": streaming stopped"));
    }
  }
  if (!expected_.empty()) {
    Digest got = hash.Finish();
    if (got != expected_) {
      return End(State::kFailed,
                 Status::Corruption(Describe() + ": digest mismatch (got " + got.String() +
                                    "): the source holds other bytes than its digest says"));
    }
  }
  End(State::kVerified, Status::Ok());
}

Status StreamedBlobSource::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return state_ != State::kRunning; });
  return status_;
}

uint64_t StreamedBlobSource::local_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return available_;
}

Result<size_t> StreamedBlobSource::ReadAt(uint64_t offset, std::span<uint8_t> out) {
  if (offset >= size_) return size_t{0};
  const uint64_t end = std::min<uint64_t>(size_, offset + out.size());
  bool local;
  {
    std::unique_lock<std::mutex> lock(mu_);
    // Bytes short of the end are served once written; the end waits for verification.
    auto ready = [&] {
      return state_ == State::kVerified || state_ == State::kFailed ||
             state_ == State::kLocalFailed || (end < size_ && end <= available_);
    };
    cv_.wait(lock, ready);
    if (state_ == State::kFailed) return status_;
    local = end <= available_;
  }
  if (!local) return inner_->ReadAt(offset, out);
  ASSIGN_OR_RETURN(size_t n, PreadFull(fd_.get(), out.first(static_cast<size_t>(end - offset)),
                                       offset, "the streamed copy of " + Describe()));
  if (n != end - offset) return Status::Internal("streamed copy of " + Describe() + " is short");
  return n;
}

}  // namespace imagefs::fetch
