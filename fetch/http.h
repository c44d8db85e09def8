#pragma once

// A small HTTP/1.1 client over libcurl (the only file that includes curl headers is
// http.cc). Connections are kept alive and reused across requests on the same client.
//
// Thread safety: HttpClient::Do may be called from many threads at once; each call uses a
// pooled connection handle of its own.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "util/status.h"

namespace imagefs::fetch {

struct TlsOptions {
  bool verify = true;          // verify the peer certificate and host name
  std::string ca_file;         // extra CA bundle (PEM); "" = system default
  std::string ca_dir;          // directory of CA certs (certs.d/HOST); "" = none
  std::string client_cert;     // PEM client cert (certs.d/HOST/*.cert), optional
  std::string client_key;      // PEM client key (certs.d/HOST/*.key), optional
};

struct HttpResponse;

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, PUT, POST, PATCH, DELETE
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  TlsOptions tls;
  bool follow_redirects = false;  // callers that must drop Authorization handle 3xx
  // Called once per response as soon as its status line and headers are in, before any
  // of its body (with follow_redirects, once for every hop). `head` has status, headers and
  // effective_url filled, no body. Return false to abort the transfer.
  std::function<bool(const HttpResponse& head)> on_headers;
  // Streaming sink for the body of a 2xx response; when set, that body is not kept in
  // HttpResponse::body. Bodies of other statuses (error JSON, redirect pages) still go to
  // HttpResponse::body (at most 1 MiB is kept). Return false to abort the transfer.
  std::function<bool(const char* data, size_t n)> on_data;
  std::chrono::milliseconds connect_timeout{10000};
  // Abort when fewer than 1 byte/s arrives for this long (a hung server).
  std::chrono::milliseconds stall_timeout{20000};
};

struct HttpResponse {
  long status = 0;
  // Header names lowercased; repeated headers are joined with ", " except
  // www-authenticate, which keeps each value (see headers_multi).
  std::map<std::string, std::string> headers;
  std::multimap<std::string, std::string> headers_multi;
  std::string body;
  std::string effective_url;
  std::string Header(const std::string& lower_name) const;
};

// Why Do failed without an HTTP response, for callers that word their own messages.
enum class TransportError {
  kNone,
  kResolve,         // unknown host
  kRefused,         // the TCP connection was refused (nothing listens there)
  kConnect,         // other connect failures (unreachable, proxy)
  kConnectTimeout,  // no TCP/TLS connection within connect_timeout
  kStall,           // connected, then no byte for stall_timeout
  kTls,             // handshake or certificate verification failed
  kReset,           // the connection broke mid-exchange (reset, empty reply, short body)
  kAborted,         // on_headers / on_data returned false
  kOther,
};

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Performs one request. Transport failures (DNS, refused, reset, TLS, timeout) are
  // kUnavailable/kTimeout with curl's reason; any HTTP status is a successful Result.
  // Messages read "METHOD URL: <curl's reason>"; timeouts are kTimeout, the rest kUnavailable.
  Result<HttpResponse> Do(const HttpRequest& request);
  // As Do, and says why it failed in *error (kNone on success) when error is not null.
  Result<HttpResponse> Do(const HttpRequest& request, TransportError* error);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace imagefs::fetch
