// HttpClient over libcurl. The only file that includes curl headers.
//
// Each Do call takes an easy handle from a pool and returns it afterwards, so concurrent
// calls never share a handle. All handles of one client attach to one CURLSH that shares
// the DNS cache, the connection cache (keep-alive reuse across handles) and TLS sessions;
// curl serializes access to each shared part through the lock callbacks below.

#include "fetch/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <mutex>
#include <string_view>
#include <vector>

#include "util/ascii.h"

namespace imagefs::fetch {
namespace {

constexpr size_t kMaxErrorBody = 1 << 20;

std::once_flag g_curl_init;


std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

// State of one transfer, seen by the header and body callbacks.
struct Transfer {
  const HttpRequest* request = nullptr;
  HttpResponse* response = nullptr;
  bool head_done = false;  // the current response's header block has ended
  bool aborted = false;    // a callback of the caller asked to stop
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t total = size * n;
  std::string_view line(data, total);
  if (line.rfind("HTTP/", 0) == 0) {
    // A new response (after a 1xx or a followed redirect): start over.
    t->response->headers.clear();
    t->response->headers_multi.clear();
    t->response->body.clear();
    t->head_done = false;
    long status = 0;
    size_t sp = line.find(' ');
    if (sp != std::string_view::npos) {
      std::string_view code = line.substr(sp + 1, 3);
      std::from_chars(code.data(), code.data() + code.size(), status);
    }
    t->response->status = status;
    return total;
  }
  if (Trim(line).empty()) {
    // End of one header block. 1xx blocks are followed by the real response.
    if (t->response->status >= 200 && !t->head_done) {
      t->head_done = true;
      if (t->request->on_headers && !t->request->on_headers(*t->response)) {
        t->aborted = true;
        return 0;
      }
    }
    return total;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return total;
  std::string name = AsciiLower(Trim(line.substr(0, colon)));
  std::string value(Trim(line.substr(colon + 1)));
  t->response->headers_multi.emplace(name, value);
  auto it = t->response->headers.find(name);
  if (it == t->response->headers.end()) {
    t->response->headers.emplace(std::move(name), std::move(value));
  } else if (name != "www-authenticate") {
    it->second += ", " + value;
  }
  return total;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t total = size * n;
  long status = t->response->status;
  if (t->request->on_data && status >= 200 && status < 300) {
    if (!t->request->on_data(data, total)) {
      t->aborted = true;
      return 0;
    }
    return total;
  }
  if (t->request->on_data) {
    // An error or redirect page: keep a bounded amount for the caller's message.
    size_t room = kMaxErrorBody - std::min(kMaxErrorBody, t->response->body.size());
    t->response->body.append(data, std::min(room, total));
    return total;
  }
  t->response->body.append(data, total);
  return total;
}

// handshake_done: the TCP connection (and for https the TLS handshake) completed.
TransportError Classify(CURLcode rc, long os_errno, bool handshake_done) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return TransportError::kResolve;
    case CURLE_COULDNT_CONNECT:
      return os_errno == ECONNREFUSED ? TransportError::kRefused : TransportError::kConnect;
    case CURLE_OPERATION_TIMEDOUT:
      return handshake_done ? TransportError::kStall : TransportError::kConnectTimeout;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
      return TransportError::kTls;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return TransportError::kReset;
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
      return TransportError::kAborted;
    default:
      return TransportError::kOther;
  }
}

}  // namespace

std::string HttpResponse::Header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

struct HttpClient::Impl {
  CURLSH* share = nullptr;
  // One mutex per kind of shared data; curl never holds two at once.
  std::array<std::mutex, CURL_LOCK_DATA_LAST> share_locks;
  std::mutex pool_mu;
  std::vector<CURL*> pool;  // idle easy handles, guarded by pool_mu

  static void Lock(CURL*, curl_lock_data data, curl_lock_access, void* user) {
    static_cast<Impl*>(user)->share_locks[data].lock();
  }
  static void Unlock(CURL*, curl_lock_data data, void* user) {
    static_cast<Impl*>(user)->share_locks[data].unlock();
  }

  CURL* Take() {
    {
      std::lock_guard<std::mutex> lock(pool_mu);
      if (!pool.empty()) {
        CURL* h = pool.back();
        pool.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }
  // Returns a handle to the pool, its options cleared (its connections live in the share).
  void Give(CURL* h) {
    curl_easy_reset(h);
    std::lock_guard<std::mutex> lock(pool_mu);
    pool.push_back(h);
  }
};

HttpClient::HttpClient() : impl_(std::make_unique<Impl>()) {
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  impl_->share = curl_share_init();
  curl_share_setopt(impl_->share, CURLSHOPT_LOCKFUNC, &Impl::Lock);
  curl_share_setopt(impl_->share, CURLSHOPT_UNLOCKFUNC, &Impl::Unlock);
  curl_share_setopt(impl_->share, CURLSHOPT_USERDATA, impl_.get());
  curl_share_setopt(impl_->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(impl_->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  curl_share_setopt(impl_->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
}

HttpClient::~HttpClient() {
  // Handles first (they were detached from the share when returned), then the share,
  // which closes the cached connections.
  for (CURL* h : impl_->pool) curl_easy_cleanup(h);
  curl_share_cleanup(impl_->share);
}

Result<HttpResponse> HttpClient::Do(const HttpRequest& request) { return Do(request, nullptr); }

Result<HttpResponse> HttpClient::Do(const HttpRequest& request, TransportError* error) {
  if (error != nullptr) *error = TransportError::kNone;
  CURL* h = impl_->Take();
  if (h == nullptr) {
    if (error != nullptr) *error = TransportError::kOther;
    return Status::Internal("curl_easy_init failed");
  }
  HttpResponse response;
  Transfer transfer;
  transfer.request = &request;
  transfer.response = &response;
  curl_slist* headers = nullptr;
  for (const auto& [k, v] : request.headers) {
    // "Name;" is curl's way to send a header with an empty value.
    std::string line = v.empty() ? k + ";" : k + ": " + v;
    headers = curl_slist_append(headers, line.c_str());
  }
  // No "Expect: 100-continue" round trip on uploads.
  headers = curl_slist_append(headers, "Expect:");

  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(h, CURLOPT_SHARE, impl_->share);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "imagefs/0.1");
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   std::max(1L, static_cast<long>(request.connect_timeout.count())));
  // Stall detection: fewer than 1 byte/s for stall_timeout (whole seconds, rounded up).
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
                   std::max(1L, static_cast<long>((request.stall_timeout.count() + 999) / 1000)));
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, request.tls.verify ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, request.tls.verify ? 2L : 0L);
  if (!request.tls.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, request.tls.ca_file.c_str());
  if (!request.tls.ca_dir.empty()) curl_easy_setopt(h, CURLOPT_CAPATH, request.tls.ca_dir.c_str());
  if (!request.tls.client_cert.empty()) {
    curl_easy_setopt(h, CURLOPT_SSLCERT, request.tls.client_cert.c_str());
  }
  if (!request.tls.client_key.empty()) {
    curl_easy_setopt(h, CURLOPT_SSLKEY, request.tls.client_key.c_str());
  }
  if (request.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (request.method == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    if (request.method == "POST" || request.method == "PUT" || request.method == "PATCH" ||
        !request.body.empty()) {
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
    }
  }

  CURLcode rc = curl_easy_perform(h);
  long os_errno = 0;
  curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
  curl_off_t connect_us = 0, appconnect_us = 0;
  curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect_us);
  curl_easy_getinfo(h, CURLINFO_APPCONNECT_TIME_T, &appconnect_us);
  bool https = request.url.rfind("https://", 0) == 0;
  bool handshake_done = connect_us > 0 && (!https || appconnect_us > 0);
  char* effective = nullptr;
  curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &effective);
  if (effective != nullptr) response.effective_url = effective;
  long final_status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &final_status);
  if (final_status != 0) response.status = final_status;
  curl_slist_free_all(headers);
  curl_easy_setopt(h, CURLOPT_SHARE, nullptr);
  impl_->Give(h);

  if (rc == CURLE_OK) return response;
  TransportError kind = Classify(rc, os_errno, handshake_done);
  if (transfer.aborted) kind = TransportError::kAborted;
  if (error != nullptr) *error = kind;
  std::string why = errbuf[0] != '\0' ? std::string(Trim(errbuf)) : curl_easy_strerror(rc);
  if (kind == TransportError::kAborted) why = "transfer stopped by the receiver";
  std::string message = request.method + " " + request.url + ": " + why;
  if (rc == CURLE_OPERATION_TIMEDOUT) return Status::Timeout(std::move(message));
  return Status::Unavailable(std::move(message));
}

}  // namespace imagefs::fetch
