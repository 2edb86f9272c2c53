#include "probing/live/protocol.h"

#include <cctype>
#include <cstdlib>
#include <set>

#include "probing/format/bytes.h"

namespace probing::protocol {
namespace {

template <typename T>
void PutOptional(Json& j, const char* key, const std::optional<T>& v) {
  if (v.has_value()) j[key] = *v;
}

template <typename T>
void GetOptional(const Json& j, const char* key, std::optional<T>& v) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    v.reset();
    return;
  }
  v = it->get<T>();
}

// Optional with a default, for fields older recorders did not send.
template <typename T>
void GetOr(const Json& j, const char* key, T& v, T fallback) {
  auto it = j.find(key);
  v = it == j.end() || it->is_null() ? fallback : it->get<T>();
}

bool AllDigits(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

Result<uint64_t> Number(std::string_view s, std::string_view what) {
  if (!AllDigits(s) || s.size() > 19)
    return InvalidArgument(std::string(what) + " must be a non-negative integer, not '" +
                           std::string(s) + "'");
  return std::strtoull(std::string(s).c_str(), nullptr, 10);
}

bool Truthy(const std::map<std::string, std::string>& q, const char* key) {
  auto it = q.find(key);
  return it != q.end() && (it->second == "1" || it->second == "true" || it->second.empty());
}

std::string UrlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::strtol(std::string(s.substr(i + 1, 2)).c_str(), nullptr, 16));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

void CollectKeys(const Json& j, std::set<std::string>* out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      out->insert(it.key());
      CollectKeys(it.value(), out);
    }
  } else if (j.is_array()) {
    for (const auto& e : j) CollectKeys(e, out);
  }
}

template <typename T>
MessageFields FieldsOf(const std::string& name, const T& sample) {
  std::set<std::string> keys;
  CollectKeys(ToJson(sample), &keys);
  return {name, std::vector<std::string>(keys.begin(), keys.end())};
}

}  // namespace

// ---- requests as query strings ---------------------------------------------------------------

std::string UrlEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~' || c == ':' || c == ',') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

RequestTarget ParseRequestTarget(std::string_view target) {
  RequestTarget t;
  size_t q = target.find('?');
  t.path = std::string(target.substr(0, q));
  if (q == std::string_view::npos) return t;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view part = rest.substr(0, amp);
    if (!part.empty()) {
      size_t eq = part.find('=');
      t.query[UrlDecode(part.substr(0, eq))] =
          eq == std::string_view::npos ? "" : UrlDecode(part.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return t;
}

std::string BacktraceRequest::Target() const {
  std::string t(kBacktracePath);
  std::string sep = "?";
  if (thread != 0) {
    t += sep + "thread=" + std::to_string(thread);
    sep = "&";
  }
  if (locals) {
    t += sep + "locals=1";
    sep = "&";
  }
  if (native) t += sep + "native=1";
  return t;
}

Result<BacktraceRequest> BacktraceRequest::FromQuery(const std::map<std::string, std::string>& q) {
  BacktraceRequest r;
  if (auto it = q.find("thread"); it != q.end()) {
    PROBING_ASSIGN_OR_RETURN(r.thread, Number(it->second, "thread"));
  }
  r.locals = Truthy(q, "locals");
  r.native = Truthy(q, "native");
  return r;
}

std::string SegmentsRequest::Target() const {
  std::string t = std::string(kSegmentsPath) + "?max_bytes=" + std::to_string(max_bytes);
  if (seal) t += "&seal=1";
  if (!rings.empty()) {
    std::string list;
    for (const auto& r : rings) list += (list.empty() ? "" : ",") + r;
    t += "&rings=" + UrlEncode(list);
  }
  if (!from.empty()) {
    std::string list;
    for (const auto& [ring, seq] : from)
      list += (list.empty() ? "" : ",") + ring + ":" + std::to_string(seq);
    t += "&from=" + UrlEncode(list);
  }
  return t;
}

Result<SegmentsRequest> SegmentsRequest::FromQuery(const std::map<std::string, std::string>& q) {
  SegmentsRequest r;
  r.seal = Truthy(q, "seal");
  if (auto it = q.find("max_bytes"); it != q.end()) {
    PROBING_ASSIGN_OR_RETURN(r.max_bytes, Number(it->second, "max_bytes"));
    if (r.max_bytes == 0) return InvalidArgument("max_bytes must be positive");
  }
  auto split = [](const std::string& s) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (start <= s.size()) {
      size_t comma = s.find(',', start);
      std::string part =
          s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!part.empty()) parts.push_back(part);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return parts;
  };
  if (auto it = q.find("rings"); it != q.end()) r.rings = split(it->second);
  if (auto it = q.find("from"); it != q.end()) {
    for (const std::string& part : split(it->second)) {
      size_t colon = part.rfind(':');
      if (colon == std::string::npos || colon == 0)
        return InvalidArgument("from takes ring:seq pairs, not '" + part + "'");
      PROBING_ASSIGN_OR_RETURN(r.from[part.substr(0, colon)],
                               Number(part.substr(colon + 1), "a from seq"));
    }
  }
  return r;
}

// ---- cells -----------------------------------------------------------------------------------

Cell CellFromJson(const Json& v) {
  if (v.is_null()) return std::monostate{};
  if (v.is_boolean()) return int64_t{v.get<bool>() ? 1 : 0};
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

Json CellToJson(const Cell& c) {
  if (auto* i = std::get_if<int64_t>(&c)) return *i;
  if (auto* d = std::get_if<double>(&c)) return *d;
  if (auto* s = std::get_if<std::string>(&c)) return *s;
  return nullptr;
}

// ---- JSON ------------------------------------------------------------------------------------

void to_json(Json& j, const ErrorReply& v) { j = Json{{"error", v.error}}; }
void from_json(const Json& j, ErrorReply& v) { j.at("error").get_to(v.error); }

void to_json(Json& j, const InfoReply& v) {
  j = Json{{"pid", v.pid},
           {"python_version", v.python_version},
           {"cmdline", v.cmdline},
           {"recorder_version", v.recorder_version},
           {"uptime", v.uptime},
           {"host", v.host},
           {"data_dir", v.data_dir},
           {"socket", v.socket},
           {"now", v.now},
           {"rank", v.rank.has_value() ? Json(*v.rank) : Json(nullptr)},
           {"role", v.role},
           {"enabled",
            {{"stack_sampler", v.enabled.stack_sampler},
             {"memory_sampler", v.enabled.memory_sampler},
             {"torch", v.enabled.torch},
             {"tcp", v.enabled.tcp}}},
           {"torch",
            {{"tracing", v.torch.tracing},
             {"step", v.torch.step},
             {"step_traced", v.torch.step_traced},
             {"hooks_installed", v.torch.hooks_installed}}}};
  if (const auto& b = v.torch.budget) {
    j["torch"]["budget"] = {{"fraction", b->fraction ? Json(*b->fraction) : Json(nullptr)},
                            {"cost_share", b->cost_share},
                            {"traced_share", b->traced_share},
                            {"traced_step_cost_ms", b->traced_step_cost_ms},
                            {"untraced_step_cost_ms", b->untraced_step_cost_ms},
                            {"left_out", b->left_out},
                            {"stride", b->stride},
                            {"calibrated", b->calibrated},
                            {"wrap_call_ns", b->wrap_call_ns},
                            {"hook_call_ns", b->hook_call_ns},
                            {"grad_hook_ns", b->grad_hook_ns}};
  }
  PutOptional(j, "run_id", v.run_id);
  PutOptional(j, "world_size", v.world_size);
  PutOptional(j, "local_rank", v.local_rank);
  PutOptional(j, "node", v.node);
  PutOptional(j, "tcp_port", v.tcp_port);
  if (v.stack_samples.has_value())
    j["stack_samples"] = {
        {"stored", v.stack_samples->stored},
        {"dropped_changed_while_read", v.stack_samples->dropped_changed_while_read},
        {"read_twice", v.stack_samples->read_twice},
        {"waiting_for_thread_name", v.stack_samples->waiting_for_thread_name}};
  PutOptional(j, "stack_reads", v.stack_reads);
  PutOptional(j, "notes", v.notes);
}
void from_json(const Json& j, InfoReply& v) {
  j.at("pid").get_to(v.pid);
  j.at("python_version").get_to(v.python_version);
  j.at("cmdline").get_to(v.cmdline);
  j.at("recorder_version").get_to(v.recorder_version);
  j.at("uptime").get_to(v.uptime);
  j.at("host").get_to(v.host);
  j.at("data_dir").get_to(v.data_dir);
  j.at("socket").get_to(v.socket);
  GetOptional(j, "rank", v.rank);
  GetOr(j, "now", v.now, 0.0);
  GetOr(j, "role", v.role, std::string());
  GetOptional(j, "run_id", v.run_id);
  GetOptional(j, "world_size", v.world_size);
  GetOptional(j, "local_rank", v.local_rank);
  GetOptional(j, "node", v.node);
  GetOptional(j, "tcp_port", v.tcp_port);
  const Json& e = j.at("enabled");
  e.at("stack_sampler").get_to(v.enabled.stack_sampler);
  e.at("memory_sampler").get_to(v.enabled.memory_sampler);
  e.at("torch").get_to(v.enabled.torch);
  e.at("tcp").get_to(v.enabled.tcp);
  const Json& t = j.at("torch");
  t.at("tracing").get_to(v.torch.tracing);
  t.at("step").get_to(v.torch.step);
  t.at("step_traced").get_to(v.torch.step_traced);
  t.at("hooks_installed").get_to(v.torch.hooks_installed);
  v.torch.budget.reset();
  if (auto it = t.find("budget"); it != t.end() && it->is_object()) {
    InfoReply::Torch::Budget b;
    GetOptional(*it, "fraction", b.fraction);
    GetOr(*it, "cost_share", b.cost_share, 0.0);
    GetOr(*it, "traced_share", b.traced_share, 0.0);
    GetOr(*it, "traced_step_cost_ms", b.traced_step_cost_ms, 0.0);
    GetOr(*it, "untraced_step_cost_ms", b.untraced_step_cost_ms, 0.0);
    GetOr(*it, "left_out", b.left_out, uint64_t{0});
    GetOr(*it, "stride", b.stride, uint64_t{1});
    GetOr(*it, "calibrated", b.calibrated, false);
    GetOr(*it, "wrap_call_ns", b.wrap_call_ns, 0.0);
    GetOr(*it, "hook_call_ns", b.hook_call_ns, 0.0);
    GetOr(*it, "grad_hook_ns", b.grad_hook_ns, 0.0);
    v.torch.budget = b;
  }
  v.stack_samples.reset();
  if (auto it = j.find("stack_samples"); it != j.end() && !it->is_null()) {
    InfoReply::StackSamples ss;
    GetOr(*it, "stored", ss.stored, uint64_t{0});
    GetOr(*it, "dropped_changed_while_read", ss.dropped_changed_while_read, uint64_t{0});
    GetOr(*it, "read_twice", ss.read_twice, uint64_t{0});
    GetOr(*it, "waiting_for_thread_name", ss.waiting_for_thread_name, uint64_t{0});
    v.stack_samples = ss;
  }
  GetOptional(j, "stack_reads", v.stack_reads);
  GetOptional(j, "notes", v.notes);
}

void to_json(Json& j, const EvalRequest& v) { j = Json{{"code", v.code}, {"timeout", v.timeout}}; }
void from_json(const Json& j, EvalRequest& v) {
  j.at("code").get_to(v.code);
  GetOr(j, "timeout", v.timeout, 30.0);
}

void to_json(Json& j, const EvalReply& v) {
  j = Json{{"stdout", v.out},
           {"stderr", v.err},
           {"value", v.value.has_value() ? Json(*v.value) : Json(nullptr)},
           {"exception", nullptr},
           {"duration", v.duration}};
  if (v.exception.has_value())
    j["exception"] = {{"type", v.exception->type},
                      {"message", v.exception->message},
                      {"traceback", v.exception->traceback}};
}
void from_json(const Json& j, EvalReply& v) {
  j.at("stdout").get_to(v.out);
  j.at("stderr").get_to(v.err);
  GetOptional(j, "value", v.value);
  v.exception.reset();
  if (auto it = j.find("exception"); it != j.end() && !it->is_null()) {
    EvalException e;
    it->at("type").get_to(e.type);
    it->at("message").get_to(e.message);
    it->at("traceback").get_to(e.traceback);
    v.exception = std::move(e);
  }
  GetOr(j, "duration", v.duration, 0.0);
}

void to_json(Json& j, const Frame& v) {
  j = Json{{"func", v.func},
           {"file", v.file},
           {"lineno", v.lineno.has_value() ? Json(*v.lineno) : Json(nullptr)},
           {"depth", v.depth},
           {"frame_type", v.frame_type}};
  PutOptional(j, "ip", v.ip);
  PutOptional(j, "offset", v.offset);
  PutOptional(j, "locals", v.locals);
}
void from_json(const Json& j, Frame& v) {
  j.at("func").get_to(v.func);
  j.at("file").get_to(v.file);
  GetOptional(j, "lineno", v.lineno);
  j.at("depth").get_to(v.depth);
  j.at("frame_type").get_to(v.frame_type);
  GetOptional(j, "ip", v.ip);
  GetOptional(j, "offset", v.offset);
  GetOptional(j, "locals", v.locals);
}

void to_json(Json& j, const ThreadBacktrace& v) {
  j = Json{{"thread_id", v.thread_id},
           {"thread_name", v.thread_name},
           {"holds_gil", v.holds_gil},
           {"truncated", v.truncated},
           {"inconsistent", v.inconsistent},
           {"frames", v.frames}};
  PutOptional(j, "stopped_us", v.stopped_us);
  PutOptional(j, "native_error", v.native_error);
}
void from_json(const Json& j, ThreadBacktrace& v) {
  j.at("thread_id").get_to(v.thread_id);
  j.at("thread_name").get_to(v.thread_name);
  j.at("holds_gil").get_to(v.holds_gil);
  GetOr(j, "truncated", v.truncated, false);
  GetOr(j, "inconsistent", v.inconsistent, false);
  GetOptional(j, "stopped_us", v.stopped_us);
  GetOptional(j, "native_error", v.native_error);
  j.at("frames").get_to(v.frames);
}

void to_json(Json& j, const BacktraceReply& v) {
  j = Json{{"threads", v.threads}};
  PutOptional(j, "locals_error", v.locals_error);
}
void from_json(const Json& j, BacktraceReply& v) {
  j.at("threads").get_to(v.threads);
  GetOptional(j, "locals_error", v.locals_error);
}

void to_json(Json& j, const ConfigSetRequest& v) { j = Json{{"key", v.key}, {"value", v.value}}; }
void from_json(const Json& j, ConfigSetRequest& v) {
  j.at("key").get_to(v.key);
  const Json& value = j.at("value");
  v.value = value.is_string() ? value.get<std::string>() : value.dump();
}

void to_json(Json& j, const Setting& v) {
  j = Json{{"name", v.name},
           {"value", v.value},
           {"default", v.default_value},
           {"description", v.description},
           {"read_only", v.read_only}};
}
void from_json(const Json& j, Setting& v) {
  j.at("name").get_to(v.name);
  j.at("value").get_to(v.value);
  j.at("default").get_to(v.default_value);
  j.at("description").get_to(v.description);
  GetOr(j, "read_only", v.read_only, false);
}

void to_json(Json& j, const ConfigReply& v) { j = Json{{"settings", v.settings}}; }
void from_json(const Json& j, ConfigReply& v) { j.at("settings").get_to(v.settings); }

void to_json(Json& j, const TablesReply& v) { j = Json{{"tables", v.tables}}; }
void from_json(const Json& j, TablesReply& v) { j.at("tables").get_to(v.tables); }

void to_json(Json& j, const TableRowsReply& v) {
  Json cols = Json::array();
  for (const auto& c : v.columns) cols.push_back({{"name", c.name}, {"type", c.type}});
  Json rows = Json::array();
  for (const auto& r : v.rows) {
    Json row = Json::array();
    for (const auto& c : r) row.push_back(CellToJson(c));
    rows.push_back(std::move(row));
  }
  j = Json{{"columns", std::move(cols)}, {"rows", std::move(rows)}};
}
void from_json(const Json& j, TableRowsReply& v) {
  v.columns.clear();
  v.rows.clear();
  for (const auto& c : j.at("columns"))
    v.columns.push_back({c.at("name").get<std::string>(), c.at("type").get<std::string>()});
  for (const auto& r : j.at("rows")) {
    if (!r.is_array()) throw std::invalid_argument("a row is not an array");
    std::vector<Cell> row;
    for (const auto& c : r) row.push_back(CellFromJson(c));
    if (row.size() != v.columns.size())
      throw std::invalid_argument("a row has " + std::to_string(row.size()) + " values for " +
                                  std::to_string(v.columns.size()) + " columns");
    v.rows.push_back(std::move(row));
  }
}

void to_json(Json& j, const Member& v) {
  j = Json{{"rank", v.rank}, {"local_rank", v.local_rank},
           {"host", v.host}, {"node", v.node},
           {"pid", v.pid},   {"port", v.port ? Json(*v.port) : Json(nullptr)}};
}
void from_json(const Json& j, Member& v) {
  j.at("rank").get_to(v.rank);
  GetOr(j, "local_rank", v.local_rank, int64_t{-1});
  j.at("host").get_to(v.host);
  GetOr(j, "node", v.node, std::string());
  GetOr(j, "pid", v.pid, int64_t{0});
  GetOptional(j, "port", v.port);
}

void to_json(Json& j, const ClusterReply& v) {
  j = Json{{"run_id", v.run_id},
           {"world_size", v.world_size},
           {"members", v.members},
           {"complete", v.complete}};
}
void from_json(const Json& j, ClusterReply& v) {
  j.at("run_id").get_to(v.run_id);
  j.at("world_size").get_to(v.world_size);
  j.at("members").get_to(v.members);
  GetOr(j, "complete", v.complete, false);
}

void to_json(Json& j, const ProgressReply& v) {
  Json groups = Json::array();
  for (const auto& g : v.groups)
    groups.push_back({{"name", g.name}, {"seq", g.seq}, {"changed", g.changed}});
  j = Json{{"now", v.now},
           {"step", v.step},
           {"step_changed", v.step_changed},
           {"groups", std::move(groups)},
           {"current", nullptr},
           {"collectives", v.collectives},
           {"stalled", v.stalled},
           {"hang_seconds", v.hang_seconds}};
  if (v.current)
    j["current"] = {{"op", v.current->op},       {"group", v.current->group},
                    {"seq", v.current->seq},     {"since", v.current->since},
                    {"thread_id", v.current->thread_id}};
}
void from_json(const Json& j, ProgressReply& v) {
  j.at("now").get_to(v.now);
  j.at("step").get_to(v.step);
  GetOr(j, "step_changed", v.step_changed, 0.0);
  v.groups.clear();
  for (const auto& g : j.at("groups"))
    v.groups.push_back({g.at("name").get<std::string>(), g.at("seq").get<int64_t>(),
                        g.value("changed", 0.0)});
  v.current.reset();
  if (auto it = j.find("current"); it != j.end() && !it->is_null())
    v.current = ProgressReply::Call{it->at("op").get<std::string>(),
                                    it->at("group").get<std::string>(),
                                    it->at("seq").get<int64_t>(), it->value("since", 0.0),
                                    it->value("thread_id", int64_t{0})};
  GetOr(j, "collectives", v.collectives, int64_t{0});
  GetOr(j, "stalled", v.stalled, 0.0);
  GetOr(j, "hang_seconds", v.hang_seconds, int64_t{0});
}

void to_json(Json& j, const SealReply& v) { j = Json{{"sealed", v.sealed}}; }
void from_json(const Json& j, SealReply& v) { j.at("sealed").get_to(v.sealed); }

void to_json(Json& j, const RingState& v) {
  j = Json{{"name", v.name}, {"oldest", v.oldest}, {"next", v.next},
           {"from", v.from}, {"to", v.to},         {"lost", v.lost}};
}
void from_json(const Json& j, RingState& v) {
  j.at("name").get_to(v.name);
  j.at("oldest").get_to(v.oldest);
  j.at("next").get_to(v.next);
  j.at("from").get_to(v.from);
  j.at("to").get_to(v.to);
  j.at("lost").get_to(v.lost);
}

// ---- segment batches -------------------------------------------------------------------------

namespace {
constexpr std::string_view kBatchMagic = "PSB1";
constexpr uint64_t kMaxHeader = 1 << 20;
constexpr uint64_t kMaxSegment = 64ull << 20;  // format's largest slot
}  // namespace

std::string EncodeSegmentBatch(const SegmentBatch& batch) {
  Json header = {{"rings", batch.rings}, {"more", batch.more}, {"sealed", batch.sealed}};
  format::ByteWriter w;
  size_t total = 64;
  for (const auto& s : batch.segments) total += s.bytes.size() + 24;
  w.reserve(total);
  w.PutBytes(kBatchMagic);
  w.PutLengthPrefixed(header.dump());
  w.PutVarint(batch.segments.size());
  for (const auto& s : batch.segments) {
    w.PutVarint(s.ring);
    w.PutVarint(s.seq);
    w.PutLengthPrefixed(s.bytes);
  }
  return std::string(w.view());
}

Result<SegmentBatch> DecodeSegmentBatch(std::string_view body) {
  format::ByteReader r(body);
  std::string_view magic, header;
  if (!r.GetBytes(kBatchMagic.size(), &magic) || magic != kBatchMagic)
    return DataLoss("a segment batch must start with " + std::string(kBatchMagic));
  if (!r.GetLengthPrefixed(&header, kMaxHeader)) return DataLoss("segment batch: bad header");
  SegmentBatch b;
  Json h = Json::parse(header, nullptr, false);
  if (h.is_discarded()) return DataLoss("segment batch: the header is not JSON");
  try {
    h.at("rings").get_to(b.rings);
    h.at("more").get_to(b.more);
    GetOr(h, "sealed", b.sealed, int64_t{0});
  } catch (const std::exception& e) {
    return DataLoss(std::string("segment batch header: ") + e.what());
  }
  uint64_t count = 0;
  if (!r.GetVarint(&count) || count > r.remaining())
    return DataLoss("segment batch: bad segment count");
  b.segments.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    SegmentBatch::Item item;
    uint64_t ring = 0;
    std::string_view bytes;
    if (!r.GetVarint(&ring) || !r.GetVarint(&item.seq) || !r.GetLengthPrefixed(&bytes, kMaxSegment))
      return DataLoss("segment batch: segment " + std::to_string(i) + " of " +
                      std::to_string(count) + " is cut short");
    if (ring >= b.rings.size())
      return DataLoss("segment batch: segment " + std::to_string(i) + " names ring " +
                      std::to_string(ring) + " of " + std::to_string(b.rings.size()));
    item.ring = static_cast<uint32_t>(ring);
    item.bytes = std::string(bytes);
    b.segments.push_back(std::move(item));
  }
  if (!r.empty()) return DataLoss("segment batch: bytes after the last segment");
  return b;
}

// ---- the documentation check -----------------------------------------------------------------

std::vector<MessageFields> AllMessageFields() {
  InfoReply info;
  info.rank = 0;
  info.run_id = "";
  info.world_size = 0;
  info.local_rank = 0;
  info.node = "";
  info.tcp_port = 0;
  info.stack_samples = InfoReply::StackSamples{};
  info.stack_reads = "";
  info.notes = std::vector<std::string>{};
  info.torch.budget = InfoReply::Torch::Budget{};
  info.torch.budget->fraction = 0.01;
  EvalReply eval;
  eval.value = "";
  eval.exception = EvalException{};
  Frame frame;
  frame.lineno = 1;
  frame.ip = "0x0";
  frame.offset = 0;
  frame.locals = std::map<std::string, std::string>{};
  ThreadBacktrace thread;
  thread.stopped_us = 0;
  thread.native_error = "";
  thread.frames = {frame};
  BacktraceReply bt;
  bt.threads = {thread};
  bt.locals_error = "";
  ConfigReply config;
  config.settings = {Setting{}};
  TableRowsReply rows;
  rows.columns = {TableColumn{}};
  SegmentBatch batch;
  batch.rings = {RingState{}};
  Json batch_header = {{"rings", batch.rings}, {"more", false}, {"sealed", 0}};
  std::set<std::string> batch_keys;
  CollectKeys(batch_header, &batch_keys);
  return {
      FieldsOf("error", ErrorReply{}),
      FieldsOf("GET /info", info),
      FieldsOf("POST /eval request", EvalRequest{}),
      FieldsOf("POST /eval", eval),
      FieldsOf("GET /backtrace", bt),
      FieldsOf("POST /config request", ConfigSetRequest{}),
      FieldsOf("GET /config", config),
      FieldsOf("GET /tables", TablesReply{}),
      FieldsOf("GET /tables/<name>", rows),
      FieldsOf("POST /seal", SealReply{}),
      FieldsOf("GET /cluster", ClusterReply{"", 0, {Member{}}, false}),
      FieldsOf("GET /progress",
               ProgressReply{0, 0, 0, {ProgressReply::Group{}}, ProgressReply::Call{}, 0, 0, 0}),
      {"GET /segments", std::vector<std::string>(batch_keys.begin(), batch_keys.end())},
  };
}

}  // namespace probing::protocol
