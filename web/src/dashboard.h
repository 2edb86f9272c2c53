// The dashboard's requests, whatever carried them: the token and origin checks, the pages
// (one embedded single-page app for every page route), its files, and the JSON API. The HTTP
// transport (server.cc) only reads requests and writes these answers.
//
//   Dashboard d(options);
//   HttpReply r = d.Handle(request);
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "probing/web/server.h"
#include "targets.h"

namespace probing::web {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // "/api/p/4242/flame?seconds=10"
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool gzipped = false;  // body is gzip (Content-Encoding: gzip)
};

// Whether `host` (a name or an address) is this machine's loopback.
bool LoopbackHost(const std::string& host);

// The most rows an SQL answer carries to the page.
inline constexpr size_t kMaxRows = 5000;

class Dashboard {
 public:
  // `port`: the one bound, for the Host check.
  Dashboard(const ServerOptions& options, int port);
  HttpReply Handle(const HttpRequest& request);

 private:
  HttpReply Api(const HttpRequest& request, const std::string& path,
                const std::map<std::string, std::string>& query);
  HttpReply TargetApi(const HttpRequest& request, Target& target, const std::string& view,
                      const std::map<std::string, std::string>& query);
  HttpReply ClusterApi(const HttpRequest& request, const std::string& run_id,
                       const std::string& view, const std::map<std::string, std::string>& query);
  // One read-only statement (cluster.<table> included) in the session of `spec`.
  HttpReply RunQuery(const std::string& spec, const std::string& sql);
  sql::QueryLimits Limits() const;
  HttpReply File(const std::string& name, const HttpRequest& request) const;
  // nullopt when the request may go on; else the refusal.
  std::optional<HttpReply> Refuse(const HttpRequest& request, bool api, bool page) const;

  ServerOptions options_;
  int port_;
  bool loopback_;
  Targets targets_;
  std::map<std::string, std::pair<std::string, std::string>> gzipped_;  // name -> (type, gzip)
};

}  // namespace probing::web
