// delay_proxy: a TCP proxy that holds every byte for a fixed one-way delay in each
// direction, for the cold-start benchmark's WAN emulation (this kernel has no sch_netem;
// `tc tbf` on the veth pair sets the rate, this sets the latency).
//
//   delay_proxy --listen 10.200.0.1:5000 --target 127.0.0.1:5001 --delay-ms 20
//
// Each accepted connection gets its own connection to the target and two pumps (one per
// direction). A pump's reader stamps each chunk it reads with the time it arrived; its
// writer sends the chunk once `delay` has passed since then, in order. So a request/response
// exchange costs 2 × delay more than without the proxy (one RTT), and bulk transfers keep
// their rate. The proxy ends TCP on both sides, so it models per-request latency, not the
// sender's slow start across the WAN (see bench/RESULTS.md).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

bool ParseAddr(const std::string& text, sockaddr_in* out) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons(static_cast<uint16_t>(std::atoi(text.c_str() + colon + 1)));
  return ::inet_pton(AF_INET, text.substr(0, colon).c_str(), &out->sin_addr) == 1;
}

// One direction of a connection: bytes read from `from` reach `to` after `delay`.
class Pump {
 public:
  Pump(int from, int to, std::chrono::microseconds delay) : from_(from), to_(to), delay_(delay) {}

  void Run() {
    std::thread writer([this] { Write(); });
    Read();
    writer.join();
  }

 private:
  struct Piece {
    Clock::time_point due;
    std::string bytes;  // empty: end of stream
  };

  void Read() {
    std::vector<char> buf(256 << 10);
    for (;;) {
      ssize_t n = ::read(from_, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      Piece p;
      p.due = Clock::now() + delay_;
      if (n > 0) p.bytes.assign(buf.data(), static_cast<size_t>(n));
      {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(p));
      }
      cv_.notify_one();
      if (n <= 0) return;
    }
  }

  void Write() {
    for (;;) {
      Piece p;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty(); });
        p = std::move(queue_.front());
        queue_.pop_front();
      }
      std::this_thread::sleep_until(p.due);
      if (p.bytes.empty()) {
        ::shutdown(to_, SHUT_WR);
        return;
      }
      size_t done = 0;
      while (done < p.bytes.size()) {
        ssize_t w = ::write(to_, p.bytes.data() + done, p.bytes.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          ::shutdown(from_, SHUT_RD);  // the reader sees EOF and the pump ends
          DrainUntilEnd();
          return;
        }
        done += static_cast<size_t>(w);
      }
    }
  }

  // After a failed write: consume queued pieces until the reader's end marker.
  void DrainUntilEnd() {
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty(); });
      Piece p = std::move(queue_.front());
      queue_.pop_front();
      if (p.bytes.empty()) return;
    }
  }

  const int from_;
  const int to_;
  const std::chrono::microseconds delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Piece> queue_;
};

void Serve(int client, sockaddr_in target, std::chrono::microseconds delay) {
  int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&target), sizeof target) != 0) {
    std::fprintf(stderr, "delay_proxy: connect: %s\n", std::strerror(errno));
    if (server >= 0) ::close(server);
    ::close(client);
    return;
  }
  int one = 1;
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  Pump up(client, server, delay), down(server, client, delay);
  std::thread t([&] { up.Run(); });
  down.Run();
  t.join();
  ::close(server);
  ::close(client);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen_text, target_text;
  long delay_ms = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--listen") listen_text = argv[i + 1];
    else if (flag == "--target") target_text = argv[i + 1];
    else if (flag == "--delay-ms") delay_ms = std::atol(argv[i + 1]);
  }
  sockaddr_in listen_addr, target;
  if (!ParseAddr(listen_text, &listen_addr) || !ParseAddr(target_text, &target) || delay_ms < 0) {
    std::fprintf(stderr, "usage: delay_proxy --listen IP:PORT --target IP:PORT --delay-ms N\n");
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&listen_addr), sizeof listen_addr) != 0 ||
      ::listen(fd, 128) != 0) {
    std::fprintf(stderr, "delay_proxy: listen on %s: %s\n", listen_text.c_str(), std::strerror(errno));
    return 1;
  }
  std::fprintf(stderr, "delay_proxy: %s -> %s, %ld ms each way\n", listen_text.c_str(),
               target_text.c_str(), delay_ms);
  const auto delay = std::chrono::microseconds(delay_ms * 1000);
  for (;;) {
    int client = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "delay_proxy: accept: %s\n", std::strerror(errno));
      return 1;
    }
    std::thread(Serve, client, target, delay).detach();
  }
}
