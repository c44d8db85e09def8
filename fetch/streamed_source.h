#pragma once

// StreamedBlobSource: a blob read once, front to back, into an unnamed local file, and
// readable while it arrives.
//
// A plain gzip or zstd layer has no index of its own: its tree is known only once the
// whole stream has been decoded. Scanning it through range reads costs a round trip per
// piece, and every later file read fetches its span again. Instead the layer is streamed
// once — large range requests, the next window in flight while the last one is written —
// into a file under the store's tmp/ that is unlinked from birth (O_TMPFILE), so nothing
// is left behind by a crash. ReadAt waits until the bytes it asks for have arrived and is
// then served locally: the index scan runs while the download does, and file reads of
// the mount that follow are local too (through the chunk cache, as any registry read).
//
// The whole stream is checked against the blob's digest. A read that reaches the last
// byte waits for that check, so a scanner that reads to the end never finishes on bytes
// that failed verification: it gets the corruption error instead.
//
// When the local file can't be written (a full disk), reads of bytes not yet local go to
// the inner source directly, as they would without streaming; one warning is logged.
//
// Thread safety: every method may be called concurrently.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "fetch/blob_source.h"
#include "util/digest.h"
#include "util/status.h"
#include "util/unique_fd.h"

namespace imagefs::fetch {

class StreamedBlobSource final : public BlobSource {
 public:
  // Starts streaming `inner` (whose blob has digest `expected`; an empty Digest: not
  // checked) into an unnamed file in `tmp_dir`. Fails only when that file can't be made.
  // keep_trying: a window that fails for a reason that may pass (the registry gone, a
  // timeout) is asked for again, a second apart at first, until it comes or the source is
  // destroyed, instead of failing the stream (a mount that serves the layer while it
  // streams: it answers again when the registry does).
  static Result<std::unique_ptr<StreamedBlobSource>> Start(std::unique_ptr<BlobSource> inner,
                                                           Digest expected,
                                                           const std::string& tmp_dir,
                                                           bool keep_trying = false);
  // Stops the download and waits for its thread.
  ~StreamedBlobSource() override;

  // Waits for the stream to end: Ok once every byte is local and verified; the stream's
  // error otherwise (a local write failure is not one: reads then go to the source).
  Status Wait();
  // Bytes the stream has made local so far.
  uint64_t local_bytes() const;
  // Stops the stream: readers waiting for bytes not yet local, and later ones, get
  // kUnavailable at once (a mount going away while the registry does not answer).
  void Cancel();

  uint64_t Size() const override { return size_; }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override;
  std::string Describe() const override { return inner_->Describe(); }

 private:
  enum class State { kRunning, kVerified, kFailed, kLocalFailed };

  StreamedBlobSource(std::unique_ptr<BlobSource> inner, Digest expected, UniqueFd fd,
                     bool keep_trying);
  void Run();
  // Sets the final state (under mu_) and wakes every reader.
  void End(State state, Status status);

  const std::unique_ptr<BlobSource> inner_;
  const Digest expected_;
  const UniqueFd fd_;
  const uint64_t size_;
  const bool keep_trying_;
  std::atomic<bool> stop_{false};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t available_ = 0;  // bytes [0, available_) are in the file
  State state_ = State::kRunning;
  Status status_;

  std::thread thread_;  // last: started once the members above exist
};

}  // namespace imagefs::fetch
