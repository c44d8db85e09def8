#pragma once

// GateProxy: a loopback TCP proxy for tests that can stop the bytes flowing to its clients
// after a given count, as a registry whose layer download stalls half-way would: what a
// real registry does not do on demand. Every accepted connection is forwarded to
// 127.0.0.1:upstream_port both ways; CloseGateAfter(n) lets n bytes (over all
// connections, counted from the proxy's start) reach the clients, then holds the rest
// until Open(). Destruction closes every connection and joins every thread.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "util/status.h"

namespace imagefs::testing {

class GateProxy {
 public:
  static Result<std::unique_ptr<GateProxy>> Start(uint16_t upstream_port);
  ~GateProxy();
  GateProxy(const GateProxy&) = delete;
  GateProxy& operator=(const GateProxy&) = delete;

  uint16_t port() const { return port_; }
  // Bytes sent to clients so far.
  uint64_t forwarded() const;
  void CloseGateAfter(uint64_t total_bytes);
  void Open();

 private:
  GateProxy(int listen_fd, uint16_t port, uint16_t upstream_port);
  void AcceptLoop();
  void Serve(int client_fd);
  // Copies from `from` to `to` until either side closes; `gated`: the direction to clients.
  void Pump(int from, int to, bool gated);
  // How many of `want` bytes may go to a client now (waits while the gate is shut).
  size_t Allow(size_t want);

  const int listen_fd_;
  const uint16_t port_;
  const uint16_t upstream_port_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t forwarded_ = 0;
  uint64_t limit_ = UINT64_MAX;
  std::vector<int> fds_;  // every connection's sockets, shut down at the end
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace imagefs::testing
