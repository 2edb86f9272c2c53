#include "dashboard.h"

#include <zlib.h>

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "probing/base/clock.h"
#include "probing/cluster/cluster.h"
#include "probing/cluster/diagnose.h"
#include "probing/live/control_client.h"
#include "probing/web/api.h"
#include "views.h"
#include "web_app.h"  // kWebApp: the app's files, embedded at build time (web/CMakeLists.txt)

namespace probing::web {
namespace {

using protocol::Json;

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
}

// The token as the session cookie carries it: hex, so any token fits a cookie's value.
std::string Hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// Constant-time comparison for the token.
bool SameToken(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string Gzip(std::string_view in) {
  z_stream z{};
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
    return {};
  std::string out(deflateBound(&z, in.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return rc == Z_STREAM_END ? out : std::string();
}

std::string ContentType(const std::string& name) {
  auto ends = [&](const char* ext) {
    const std::string e(ext);
    return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

std::string HtmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

int HttpStatusOf(const Status& st) {
  switch (st.code()) {
    case StatusCode::kNotFound: return 404;
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kDeadlineExceeded: return 504;
    case StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

HttpReply JsonReply(const Json& j, int status = 200) {
  HttpReply r;
  r.status = status;
  r.body = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

HttpReply ErrorReply(int status, const std::string& message) {
  return JsonReply(protocol::ToJson(protocol::ErrorReply{message}), status);
}

HttpReply ErrorReply(const Status& st) { return ErrorReply(HttpStatusOf(st), st.message()); }

// A page of its own for what the app cannot show (no token, no such page): never a blank one.
HttpReply HtmlPage(int status, const std::string& title, const std::string& message) {
  HttpReply r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.body = "<!doctype html><html><head><meta charset=\"utf-8\"><title>" + HtmlEscape(title) +
           "</title><link rel=\"stylesheet\" href=\"/static/app.css\"></head><body>"
           "<header class=\"top\"><a href=\"/\">probing</a></header><main><div class=\"error\" "
           "id=\"page-error\"><b>" +
           HtmlEscape(title) + "</b><p>" + HtmlEscape(message) + "</p></div></main></body></html>";
  return r;
}

Result<double> Number(const std::map<std::string, std::string>& query, const char* key,
                      double fallback, double min, double max) {
  auto it = query.find(key);
  if (it == query.end() || it->second.empty()) return fallback;
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  if (end == it->second.c_str() || *end != '\0' || !std::isfinite(v) || v < min || v > max) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g to %g", min, max);
    return InvalidArgument(std::string(key) + " must be a number from " + buf + ", not '" +
                           it->second + "'");
  }
  return v;
}

// "/p/4242" -> true; the routes the app draws.
bool IsPageRoute(const std::string& path) {
  if (path == "/") return true;
  for (const char* prefix : {"/p/", "/r/"}) {
    const std::string p(prefix);
    if (path.rfind(p, 0) == 0 && AllDigits(std::string_view(path).substr(p.size()))) return true;
  }
  // /cluster/<run id>
  return path.size() > 9 && path.rfind("/cluster/", 0) == 0 &&
         path.find('/', 9) == std::string::npos;
}

// A path segment with its %XX escapes decoded.
std::string PathDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::strtol(std::string(s.substr(i + 1, 2)).c_str(), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool AllDigitsString(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string CookieValue(const std::string& header, const std::string& name) {
  size_t at = 0;
  while (at < header.size()) {
    size_t end = header.find(';', at);
    if (end == std::string::npos) end = header.size();
    std::string part = header.substr(at, end - at);
    const size_t b = part.find_first_not_of(' ');
    if (b != std::string::npos) part = part.substr(b);
    if (part.rfind(name + "=", 0) == 0) return part.substr(name.size() + 1);
    at = end + 1;
  }
  return {};
}

ThreadStack FromBacktrace(const protocol::ThreadBacktrace& t) {
  ThreadStack out;
  out.thread_id = t.thread_id;
  out.thread_name = t.thread_name;
  out.holds_gil = t.holds_gil;
  out.truncated = t.truncated;
  for (const auto& f : t.frames) out.frames.push_back({f.func, f.file, f.lineno});
  return out;
}

}  // namespace

bool LoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  boost::system::error_code ec;
  auto a = boost::asio::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

Dashboard::Dashboard(const ServerOptions& options, int port)
    : options_(options),
      port_(port),
      loopback_(LoopbackHost(options.host)),
      targets_(options.targets, [&] {
        live::SessionOptions so;
        so.token = options.target_token;
        so.timeout_s = options.timeout_s;
        so.data_dir = options.data_dir;
        return so;
      }()) {
  for (const auto& [name, data] : kWebApp)
    gzipped_[std::string(name)] = {ContentType(std::string(name)), Gzip(data)};
}

std::optional<HttpReply> Dashboard::Refuse(const HttpRequest& request, bool api, bool page) const {
  auto header = [&](const char* name) -> std::string {
    auto it = request.headers.find(name);
    return it == request.headers.end() ? std::string() : it->second;
  };
  auto refuse = [&](int status, const std::string& title, const std::string& message) {
    if (api) return ErrorReply(status, message);
    if (page) return HtmlPage(status, title, message);
    HttpReply r;
    r.status = status;
    r.content_type = "text/plain; charset=utf-8";
    r.body = message + "\n";
    return r;
  };
  const std::string host = Lower(header("host"));
  if (options_.token.empty()) {
    // Without a token only this machine may ask, under a loopback name: a web page elsewhere
    // cannot reach us through a name of its own that resolves here (DNS rebinding).
    const std::string p = ":" + std::to_string(port_);
    if (host != "127.0.0.1" + p && host != "localhost" + p && host != "[::1]" + p)
      return refuse(403, "Refused",
                    "refused: the Host header '" + host +
                        "' is not this dashboard's loopback address; open http://127.0.0.1" + p +
                        "/");
  } else {
    const std::string cookie =
        CookieValue(header("cookie"), "probing_token_" + std::to_string(port_));
    std::string auth = header("authorization");
    std::string bearer;
    if (Lower(auth.substr(0, 7)) == "bearer ") bearer = auth.substr(7);
    const auto q = protocol::ParseRequestTarget(request.target).query;
    const auto qt = q.find("token");
    const std::string from_query = page && qt != q.end() ? qt->second : std::string();
    const bool ok = SameToken(cookie, Hex(options_.token)) || SameToken(bearer, options_.token) ||
                    SameToken(from_query, options_.token);
    if (!ok) {
      const bool presented = !cookie.empty() || !bearer.empty() || !from_query.empty();
      return refuse(401, presented ? "Wrong token" : "Token needed",
                    presented ? "wrong token: open the address `probing web` printed (it ends in "
                                "?token=...), or send Authorization: Bearer <token>"
                              : "this dashboard needs its token: open the address `probing web` "
                                "printed (it ends in ?token=...), or send Authorization: Bearer "
                                "<token>");
    }
  }
  if (request.method == "POST") {
    // A form or a script elsewhere cannot send JSON here without asking first (CORS), and we
    // never answer such a question.
    if (Lower(header("content-type")).rfind("application/json", 0) != 0)
      return refuse(415, "Refused", "refused: POST needs Content-Type: application/json");
    const std::string origin = Lower(header("origin"));
    if (!origin.empty() && origin != "http://" + host)
      return refuse(403, "Refused", "refused: a request from another origin (" + origin + ")");
  }
  return std::nullopt;
}

HttpReply Dashboard::File(const std::string& name, const HttpRequest& request) const {
  auto it = gzipped_.find(name);
  if (it == gzipped_.end()) return HtmlPage(404, "Not found", "no file " + name);
  HttpReply r;
  r.content_type = it->second.first;
  auto enc = request.headers.find("accept-encoding");
  if (enc != request.headers.end() && enc->second.find("gzip") != std::string::npos &&
      !it->second.second.empty()) {
    r.body = it->second.second;
    r.gzipped = true;
  } else {
    for (const auto& [n, data] : kWebApp)
      if (n == name) r.body = std::string(data);
  }
  return r;
}

HttpReply Dashboard::Handle(const HttpRequest& request) {
  const protocol::RequestTarget t = protocol::ParseRequestTarget(request.target);
  const bool api = t.path.rfind("/api/", 0) == 0;
  const bool page = IsPageRoute(t.path);
  if (auto refusal = Refuse(request, api, page)) return std::move(*refusal);
  if (!options_.token.empty() && page && t.query.count("token") != 0) {
    // The token came in the address: keep it in a cookie for this browser session and show
    // the address without it (it stays out of the history and of screenshots).
    HttpReply r;
    r.status = 303;
    r.content_type = "text/plain; charset=utf-8";
    r.headers.emplace_back("Location", t.path);
    r.headers.emplace_back("Set-Cookie", "probing_token_" + std::to_string(port_) + "=" +
                                             Hex(options_.token) +
                                             "; Path=/; HttpOnly; SameSite=Strict");
    return r;
  }
  if (api) {
    try {
      return Api(request, t.path, t.query);
    } catch (const std::exception& e) {  // a JSON body of the wrong shape
      return ErrorReply(400, std::string("bad request: ") + e.what());
    }
  }
  if (request.method != "GET" && request.method != "HEAD")
    return HtmlPage(405, "Not allowed", request.method + " is not allowed here");
  if (page) return File("index.html", request);
  if (t.path.rfind("/static/", 0) == 0) return File(t.path.substr(8), request);
  if (t.path == "/favicon.ico") {
    HttpReply r = File("icon.svg", request);
    return r;
  }
  return HtmlPage(404, "Not found", "no page " + t.path + " here; the dashboard starts at /");
}

HttpReply Dashboard::Api(const HttpRequest& request, const std::string& path,
                         const std::map<std::string, std::string>& query) {
  if (path == "/api/targets") {
    if (request.method != "GET") return ErrorReply(405, "GET only");
    return JsonReply(ToJson(targets_.List()));
  }
  // /api/<kind>/<key>/<view>
  std::vector<std::string> parts;
  for (size_t at = 5; at <= path.size();) {
    size_t end = path.find('/', at);
    if (end == std::string::npos) end = path.size();
    parts.push_back(path.substr(at, end - at));
    at = end + 1;
  }
  if (parts.size() != 3) return ErrorReply(404, "no such endpoint: " + path + " (docs/web.md)");
  if (parts[0] == "cluster") return ClusterApi(request, PathDecode(parts[1]), parts[2], query);
  auto target = targets_.Find(parts[0], parts[1]);
  if (!target.ok()) return ErrorReply(target.status());
  return TargetApi(request, **target, parts[2], query);
}

HttpReply Dashboard::TargetApi(const HttpRequest& request, Target& target, const std::string& view,
                               const std::map<std::string, std::string>& query) {
  const bool get = request.method == "GET";
  const bool post = request.method == "POST";
  if (view == "overview" && get) {
    auto session = target.Open();
    if (!session.ok()) return ErrorReply(session.status());
    live::Session& s = **session;
    OverviewReply o;
    o.id = target.id();
    o.description = s.Describe();
    o.kind = live::TargetKindName(s.kind());
    bool ask = false;
    switch (s.kind()) {
      case live::TargetKind::kProcess:
        switch (live::StateOf(*s.pid())) {
          case live::ProcessState::kGone:
          case live::ProcessState::kZombie: o.state = "gone"; break;
          case live::ProcessState::kStopped: o.state = "stopped"; break;
          case live::ProcessState::kRunning:
            o.state = "running";
            ask = true;
            break;
        }
        break;
      case live::TargetKind::kRingDirectory:
        o.state = s.has_control() ? "running" : "recorded";
        ask = s.has_control();
        break;
      case live::TargetKind::kRecording: o.state = "recorded"; break;
      case live::TargetKind::kRemote:
        o.state = "remote";
        ask = true;
        break;
    }
    if (ask) {
      auto info = s.Info();
      if (info.ok()) {
        o.info = std::move(info).value();
        o.control = true;
      } else {
        o.info_error = info.status().message();
      }
    } else if (o.state == "stopped" || o.state == "gone") {
      o.info_error = live::StateProblem(*s.pid());
      if (o.info_error->empty()) o.info_error = "process " + std::to_string(*s.pid()) + " is gone";
    }
    auto snap = target.Data();
    if (snap.ok()) {
      FillOverview(snap->segments, &o);
      o.live = snap->live;
      o.segments = snap->segments.size();
      o.segments_corrupt = snap->corrupt;
      o.segments_lost = snap->lost;
    } else if (!o.control) {
      return ErrorReply(snap.status());
    } else {
      o.data_error = snap.status().message();
    }
    return JsonReply(ToJson(o));
  }
  if (view == "stacks" && get) {
    auto session = target.Open();
    if (!session.ok()) return ErrorReply(session.status());
    std::optional<std::string> note;
    if ((*session)->has_control()) {
      const double asked = static_cast<double>(RealtimeNs()) / 1e9;
      auto bt = (*session)->Backtrace({});
      if (bt.ok()) {
        StacksReply r;
        r.source = "backtrace";
        r.ts = asked;
        for (const auto& t : bt->threads) r.threads.push_back(FromBacktrace(t));
        std::stable_sort(
            r.threads.begin(), r.threads.end(),
            [](const ThreadStack& a, const ThreadStack& b) { return a.holds_gil && !b.holds_gil; });
        return JsonReply(ToJson(r));
      }
      note = "the latest samples, since a backtrace failed: " + bt.status().message();
    }
    auto snap = target.Data();
    if (!snap.ok()) return ErrorReply(snap.status());
    StacksReply r = LatestStacks(snap->segments);
    r.note = note;
    return JsonReply(ToJson(r));
  }
  if (view == "flame" && get) {
    auto seconds = Number(query, "seconds", 0, 0, 1e9);
    if (!seconds.ok()) return ErrorReply(seconds.status());
    std::optional<uint64_t> thread;
    if (auto it = query.find("thread"); it != query.end() && !it->second.empty()) {
      auto tid = Number(query, "thread", 0, 1, 1e15);
      if (!tid.ok()) return ErrorReply(tid.status());
      thread = static_cast<uint64_t>(*tid);
    }
    auto snap = target.Data();
    if (!snap.ok()) return ErrorReply(snap.status());
    return JsonReply(ToJson(Flame(snap->segments, *seconds, thread)));
  }
  if (view == "steps" && get) {
    auto last = Number(query, "last", 100, 1, 100000);
    if (!last.ok()) return ErrorReply(last.status());
    auto snap = target.Data();
    if (!snap.ok()) return ErrorReply(snap.status());
    return JsonReply(ToJson(Steps(snap->segments, static_cast<size_t>(*last))));
  }
  if (view == "memory" && get) {
    auto seconds = Number(query, "seconds", 300, 0, 1e9);
    if (!seconds.ok()) return ErrorReply(seconds.status());
    auto snap = target.Data();
    if (!snap.ok()) return ErrorReply(snap.status());
    return JsonReply(ToJson(Memory(snap->segments, *seconds)));
  }
  if (view == "variables" && get) {
    auto snap = target.Data();
    if (!snap.ok()) return ErrorReply(snap.status());
    return JsonReply(ToJson(Variables(snap->segments)));
  }
  if (view == "query" && post) {
    const QueryRequest q = Json::parse(request.body).get<QueryRequest>();
    return RunQuery(target.spec(), q.sql);
  }
  if (view == "config" && (get || post)) {
    auto session = target.Open();
    if (!session.ok()) return ErrorReply(session.status());
    Result<protocol::ConfigReply> r = Internal("unreachable");
    if (get) {
      r = (*session)->GetConfig();
    } else {
      auto set = protocol::Parse<protocol::ConfigSetRequest>(request.body, "the request");
      if (!set.ok()) return ErrorReply(400, set.status().message());
      r = (*session)->SetConfig(set->key, set->value);
    }
    if (!r.ok()) return ErrorReply(r.status());
    return JsonReply(protocol::ToJson(*r));
  }
  for (const char* v :
       {"overview", "stacks", "flame", "steps", "memory", "variables", "query", "config"})
    if (view == v) return ErrorReply(405, request.method + " is not allowed on " + view);
  return ErrorReply(404, "no such view '" + view + "' (docs/web.md lists them)");
}

sql::QueryLimits Dashboard::Limits() const {
  sql::QueryLimits limits;
  limits.read_only = true;
  limits.timeout_s = options_.query_timeout_s;
  limits.max_rows = kMaxRows;
  return limits;
}

HttpReply Dashboard::RunQuery(const std::string& spec, const std::string& sql) {
  const int64_t began = MonotonicNs();
  std::string coverage;
  // cluster.<table>: every rank of the job the target belongs to (cluster::Query finds it).
  auto r = cluster::Query(spec, targets_.ClusterOptions(), sql, &coverage, Limits());
  if (!r.ok()) return ErrorReply(r.status());
  QueryReply out;
  out.columns = std::move(r->columns);
  out.rows = std::move(r->rows);
  out.truncated = r->truncated;
  out.elapsed_ms = static_cast<double>(MonotonicNs() - began) / 1e6;
  if (!coverage.empty()) out.coverage = coverage;
  return JsonReply(ToJson(out));
}

HttpReply Dashboard::ClusterApi(const HttpRequest& request, const std::string& run_id,
                                const std::string& view,
                                const std::map<std::string, std::string>& query) {
  const bool get = request.method == "GET";
  auto job = targets_.Job(run_id);
  if (!job.ok()) return ErrorReply(job.status());
  const cluster::Options options = targets_.ClusterOptions();
  if (view == "overview" && get) {
    ClusterReply out;
    out.job = job->run_id;
    out.world_size = job->world_size;
    out.how = job->how;
    for (const cluster::MemberStatus& st : cluster::List(*job, options)) {
      const cluster::Member& m = *st.member;
      ClusterMember c;
      c.rank = m.rank;
      c.local_rank = m.local_rank;
      c.host = m.host;
      c.node = m.node;
      c.pid = m.pid;
      c.target = m.target;
      c.state = st.state;
      c.error = st.error;
      c.step = st.step;
      c.clock_offset_s = st.clock_offset_s;
      c.address = st.address;
      if (AllDigitsString(m.target)) c.url = "/p/" + m.target;
      out.members.push_back(std::move(c));
    }
    return JsonReply(ToJson(out));
  }
  if (view == "steps" && get) {
    auto last = Number(query, "last", 50, 1, 10000);
    if (!last.ok()) return ErrorReply(last.status());
    std::string spec;
    for (const auto& m : job->members)
      if (!m.target.empty()) {
        spec = m.target;
        break;
      }
    if (spec.empty()) return ErrorReply(503, "no rank of job " + run_id + " can be reached");
    std::string coverage;
    auto r = cluster::Query(spec, options,
                            "SELECT rank, step, max(time + duration), max(stage = 'step') "
                            "FROM cluster.torch_trace WHERE rank IS NOT NULL GROUP BY rank, step",
                            &coverage);
    if (!r.ok()) return ErrorReply(r.status());
    std::vector<RankStep> rows;
    auto number = [](const Cell& c) -> double {
      if (auto* i = std::get_if<int64_t>(&c)) return static_cast<double>(*i);
      if (auto* d = std::get_if<double>(&c)) return *d;
      return 0;
    };
    for (const auto& row : r->rows)
      rows.push_back({static_cast<int64_t>(number(row[0])), static_cast<int64_t>(number(row[1])),
                      number(row[2]), number(row[3]) != 0});
    ClusterStepsReply out = ClusterSteps(rows, static_cast<size_t>(*last));
    out.coverage = coverage;
    return JsonReply(ToJson(out));
  }
  if (view == "stacks" && get) {
    cluster::MergedStacks merged = cluster::Backtraces(*job, options);
    ClusterStacksReply out;
    out.coverage = merged.coverage;
    for (const auto& g : merged.groups) {
      ClusterStackGroup c;
      c.thread_name = g.thread_name;
      c.ranks = g.ranks;
      c.holds_gil = g.holds_gil;
      for (const auto& f : g.frames) c.frames.push_back({f.func, f.file, f.lineno});
      out.groups.push_back(std::move(c));
    }
    return JsonReply(ToJson(out));
  }
  if (view == "stragglers" && get) {
    auto steps = Number(query, "steps", 20, 1, 10000);
    if (!steps.ok()) return ErrorReply(steps.status());
    std::string coverage;
    auto ranks = cluster::FetchRankData(
        *job, options,
        {format::Stream::kTorch, format::Stream::kCollectives, format::Stream::kStacks},
        &coverage);
    const cluster::StragglerReport report = cluster::Stragglers(ranks, static_cast<int64_t>(*steps));
    ClusterStragglersReply out;
    out.arrival = report.arrival;
    out.first_step = report.first_step;
    out.last_step = report.last_step;
    out.problem = report.problem;
    out.coverage = coverage;
    for (const auto& r : report.ranks)
      out.ranks.push_back({r.rank, r.host, r.pid, r.lateness_ms, r.lateness_max_ms, r.step_ms,
                           r.steps, r.late, r.frame, r.frame_share, r.per_step});
    return JsonReply(ToJson(out));
  }
  if (view == "hang" && get) {
    const cluster::HangReport report = cluster::Hang(*job, options);
    ClusterHangReply out;
    out.verdict = report.verdict;
    out.culprits = report.culprits;
    for (const auto& r : report.ranks) {
      HangRow row;
      row.rank = r.rank;
      row.state = r.state;
      row.why = r.error;
      if (r.step >= 0) row.step = r.step;
      if (r.seq >= 0) row.collective = r.seq;
      row.op = r.op;
      row.stalled_s = r.stalled_s;
      row.frames = r.frames;
      out.ranks.push_back(std::move(row));
    }
    return JsonReply(ToJson(out));
  }
  if (view == "query" && request.method == "POST") {
    const QueryRequest q = Json::parse(request.body).get<QueryRequest>();
    for (const auto& m : job->members)
      if (!m.target.empty()) return RunQuery(m.target, q.sql);
    return ErrorReply(503, "no rank of job " + run_id + " can be reached");
  }
  for (const char* v : {"overview", "steps", "stacks", "stragglers", "hang", "query"})
    if (view == v) return ErrorReply(405, request.method + " is not allowed on " + view);
  return ErrorReply(404, "no such view '" + view + "' (docs/web.md lists them)");
}

}  // namespace probing::web
