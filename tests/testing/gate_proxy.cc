#include "tests/testing/gate_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

namespace imagefs::testing {
namespace {

int ConnectLoopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<GateProxy>> GateProxy::Start(uint16_t upstream_port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "gate proxy socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Status st = Status::FromErrno(errno, "gate proxy listen");
    ::close(fd);
    return st;
  }
  return std::unique_ptr<GateProxy>(new GateProxy(fd, ntohs(addr.sin_port), upstream_port));
}

GateProxy::GateProxy(int listen_fd, uint16_t port, uint16_t upstream_port)
    : listen_fd_(listen_fd), port_(port), upstream_port_(upstream_port) {
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

GateProxy::~GateProxy() {
  stop_ = true;
  {
    std::lock_guard lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    cv_.notify_all();
  }
  acceptor_.join();
  for (std::thread& t : threads_) t.join();
  for (int fd : fds_) ::close(fd);
  ::close(listen_fd_);
}

uint64_t GateProxy::forwarded() const {
  std::lock_guard lock(mu_);
  return forwarded_;
}

void GateProxy::CloseGateAfter(uint64_t total_bytes) {
  std::lock_guard lock(mu_);
  limit_ = total_bytes;
}

void GateProxy::Open() {
  std::lock_guard lock(mu_);
  limit_ = UINT64_MAX;
  cv_.notify_all();
}

void GateProxy::AcceptLoop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    int upstream = ConnectLoopback(upstream_port_);
    std::lock_guard lock(mu_);
    fds_.push_back(client);
    if (upstream < 0) {
      ::shutdown(client, SHUT_RDWR);
      continue;
    }
    fds_.push_back(upstream);
    threads_.emplace_back([this, client, upstream] { Pump(client, upstream, false); });
    threads_.emplace_back([this, client, upstream] { Pump(upstream, client, true); });
  }
}

size_t GateProxy::Allow(size_t want) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return stop_ || forwarded_ < limit_; });
  if (stop_) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(want, limit_ - forwarded_));
  forwarded_ += n;
  return n;
}

void GateProxy::Pump(int from, int to, bool gated) {
  char buf[64 << 10];
  while (!stop_) {
    pollfd p{from, POLLIN, 0};
    int r = ::poll(&p, 1, 100);
    if (r == 0) continue;
    if (r < 0 && errno == EINTR) continue;
    // Reads only what the gate lets through, so held bytes stay in the socket.
    size_t want = sizeof(buf);
    if (gated) {
      want = Allow(want);
      if (want == 0) break;
    }
    ssize_t n = ::recv(from, buf, want, 0);
    if (gated && n < static_cast<ssize_t>(want)) {
      std::lock_guard lock(mu_);
      forwarded_ -= want - static_cast<size_t>(std::max<ssize_t>(n, 0));
      cv_.notify_all();
    }
    if (n <= 0 || !SendAll(to, buf, static_cast<size_t>(n))) break;
  }
  ::shutdown(to, SHUT_WR);
  ::shutdown(from, SHUT_RD);
}

}  // namespace imagefs::testing
