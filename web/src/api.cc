#include "probing/web/api.h"

#include <set>

namespace probing::web {
namespace {

template <typename T>
Json OrNull(const std::optional<T>& v) {
  return v.has_value() ? Json(*v) : Json(nullptr);
}

template <typename T>
Json Column(const std::vector<std::optional<T>>& values) {
  Json out = Json::array();
  for (const auto& v : values) out.push_back(OrNull(v));
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
protocol::MessageFields FieldsOf(const std::string& name, const T& sample) {
  std::set<std::string> keys;
  CollectKeys(ToJson(sample), &keys);
  return {name, std::vector<std::string>(keys.begin(), keys.end())};
}

}  // namespace

void to_json(Json& j, const ProcessEntry& v) {
  j = Json{{"pid", v.pid},
           {"state", v.state},
           {"alive", v.alive},
           {"command", v.command},
           {"python_version", v.python_version},
           {"rank", OrNull(v.rank)},
           {"job", OrNull(v.job)},
           {"data_bytes", v.data_bytes},
           {"url", v.url}};
}

void to_json(Json& j, const JobEntry& v) {
  j = Json{{"job", v.job}, {"pids", v.pids}, {"url", OrNull(v.url)}};
}

void to_json(Json& j, const NamedTarget& v) {
  j = Json{{"id", v.id},     {"target", v.target},
           {"kind", v.kind}, {"description", v.description},
           {"url", v.url},   {"error", OrNull(v.error)}};
}

void to_json(Json& j, const TargetsReply& v) {
  j = Json{{"data_dir", v.data_dir},
           {"processes", v.processes},
           {"jobs", v.jobs},
           {"named", v.named},
           {"open", OrNull(v.open)}};
}

void to_json(Json& j, const ThreadEntry& v) {
  j = Json{{"thread_id", v.thread_id}, {"name", v.name}, {"samples", v.samples}};
}

void to_json(Json& j, const OverviewReply& v) {
  j = Json{{"id", v.id},
           {"description", v.description},
           {"kind", v.kind},
           {"state", v.state},
           {"live", v.live},
           {"control", v.control},
           {"info", v.info ? protocol::ToJson(*v.info) : Json(nullptr)},
           {"info_error", OrNull(v.info_error)},
           {"data_error", OrNull(v.data_error)},
           {"pid", OrNull(v.pid)},
           {"command", v.command},
           {"python_version", v.python_version},
           {"host", v.host},
           {"rank", OrNull(v.rank)},
           {"first_ts", v.first_ts},
           {"last_ts", v.last_ts},
           {"samples", v.samples},
           {"steps", v.steps},
           {"segments", v.segments},
           {"segments_corrupt", v.segments_corrupt},
           {"segments_lost", v.segments_lost},
           {"threads", v.threads}};
}

void to_json(Json& j, const StackFrame& v) {
  j = Json{{"func", v.func}, {"file", v.file}, {"lineno", OrNull(v.lineno)}};
}

void to_json(Json& j, const ThreadStack& v) {
  j = Json{{"thread_id", v.thread_id}, {"thread_name", v.thread_name}, {"holds_gil", v.holds_gil},
           {"truncated", v.truncated}, {"ts", OrNull(v.ts)},           {"frames", v.frames}};
}

void to_json(Json& j, const StacksReply& v) {
  j = Json{{"source", v.source}, {"ts", v.ts}, {"threads", v.threads}, {"note", OrNull(v.note)}};
}

void to_json(Json& j, const FlameNode& v) {
  Json children = Json::array();
  for (const FlameNode& c : v.children) children.push_back(ToJson(c));
  j = Json::array({v.name, v.value, std::move(children)});
}

void to_json(Json& j, const FlameReply& v) {
  j = Json{{"seconds", v.seconds},       {"from_ts", v.from_ts},  {"to_ts", v.to_ts},
           {"thread", OrNull(v.thread)}, {"samples", v.samples},  {"threads", v.threads},
           {"names", v.names},           {"root", ToJson(v.root)}};
}

void to_json(Json& j, const StepRow& v) {
  j = Json{{"step", v.step},       {"start", v.start},       {"wall", v.wall},
           {"forward", v.forward}, {"backward", v.backward}, {"optimizer", v.optimizer},
           {"rest", v.rest}};
}

void to_json(Json& j, const ModuleRow& v) {
  j = Json{{"module", v.module},
           {"stage", v.stage},
           {"per_step", v.per_step},
           {"calls_per_step", v.calls_per_step}};
}

void to_json(Json& j, const StepsReply& v) {
  j = Json{{"steps_recorded", v.steps_recorded}, {"steps", v.steps}, {"modules", v.modules}};
}

void to_json(Json& j, const MemoryReply& v) {
  j = Json{{"seconds", v.seconds},
           {"ts", v.ts},
           {"rss", v.rss},
           {"vms", v.vms},
           {"py_blocks", Column(v.py_blocks)},
           {"cuda_allocated", Column(v.cuda_allocated)},
           {"cuda_reserved", Column(v.cuda_reserved)}};
}

void to_json(Json& j, const VariableRow& v) {
  j = Json{
      {"func", v.func}, {"name", v.name}, {"value", v.value}, {"step", v.step}, {"time", v.time}};
}

void to_json(Json& j, const MetricRow& v) {
  j = Json{{"name", v.name}, {"value", v.value}, {"time", v.time}};
}

void to_json(Json& j, const VariablesReply& v) {
  j = Json{{"variables", v.variables}, {"metrics", v.metrics}};
}

void to_json(Json& j, const QueryRequest& v) { j = Json{{"sql", v.sql}}; }

void from_json(const Json& j, QueryRequest& v) { j.at("sql").get_to(v.sql); }

void to_json(Json& j, const QueryReply& v) {
  Json rows = Json::array();
  for (const auto& row : v.rows) {
    Json r = Json::array();
    for (const Cell& c : row) r.push_back(protocol::CellToJson(c));
    rows.push_back(std::move(r));
  }
  j = Json{{"columns", v.columns},
           {"rows", std::move(rows)},
           {"truncated", v.truncated},
           {"elapsed_ms", v.elapsed_ms},
           {"coverage", OrNull(v.coverage)}};
}

void to_json(Json& j, const ClusterMember& v) {
  j = Json{{"rank", v.rank},         {"local_rank", v.local_rank},
           {"host", v.host},         {"node", v.node},
           {"pid", v.pid},           {"target", v.target},
           {"state", v.state},       {"error", v.error},
           {"step", OrNull(v.step)}, {"clock_offset_s", OrNull(v.clock_offset_s)},
           {"address", v.address},   {"url", OrNull(v.url)}};
}

void to_json(Json& j, const ClusterReply& v) {
  j = Json{{"job", v.job}, {"world_size", v.world_size}, {"how", v.how}, {"members", v.members}};
}

void to_json(Json& j, const ClusterStepsReply& v) {
  Json wall = Json::array();
  for (const auto& row : v.wall) wall.push_back(Column(row));
  j = Json{
      {"ranks", v.ranks}, {"steps", v.steps}, {"wall", std::move(wall)}, {"coverage", v.coverage}};
}

void to_json(Json& j, const ClusterStackGroup& v) {
  j = Json{{"thread_name", v.thread_name},
           {"ranks", v.ranks},
           {"holds_gil", v.holds_gil},
           {"frames", v.frames}};
}

void to_json(Json& j, const ClusterStacksReply& v) {
  j = Json{{"groups", v.groups}, {"coverage", v.coverage}};
}

void to_json(Json& j, const StragglerRow& v) {
  j = Json{{"rank", v.rank},       {"host", v.host},
           {"pid", v.pid},         {"late_ms", v.late_ms},
           {"max_late_ms", v.max_late_ms}, {"step_ms", v.step_ms},
           {"steps", v.steps},     {"late", v.late},
           {"frame", v.frame},     {"frame_share", v.frame_share},
           {"arrivals", v.arrivals}};
}

void to_json(Json& j, const ClusterStragglersReply& v) {
  j = Json{{"arrival", v.arrival}, {"first_step", v.first_step}, {"last_step", v.last_step},
           {"problem", v.problem}, {"ranks", v.ranks},           {"coverage", v.coverage}};
}

void to_json(Json& j, const HangRow& v) {
  j = Json{{"rank", v.rank},
           {"state", v.state},
           {"why", v.why},
           {"step", v.step ? Json(*v.step) : Json()},
           {"collective", v.collective ? Json(*v.collective) : Json()},
           {"op", v.op},
           {"stalled_s", v.stalled_s},
           {"frames", v.frames}};
}

void to_json(Json& j, const ClusterHangReply& v) {
  j = Json{{"verdict", v.verdict}, {"culprits", v.culprits}, {"ranks", v.ranks}};
}

std::vector<protocol::MessageFields> AllMessageFields() {
  TargetsReply targets;
  targets.processes = {ProcessEntry{}};
  targets.jobs = {JobEntry{}};
  targets.named = {NamedTarget{}};
  OverviewReply overview;  // its info is the recorder's own (docs/protocol.md): not listed
  overview.info_error = overview.data_error = "";
  overview.threads = {ThreadEntry{}};
  StacksReply stacks;
  ThreadStack thread;
  thread.frames = {StackFrame{}};
  stacks.threads = {thread};
  FlameReply flame;
  flame.threads = {ThreadEntry{}};
  StepsReply steps;
  steps.steps = {StepRow{}};
  steps.modules = {ModuleRow{}};
  VariablesReply variables;
  variables.variables = {VariableRow{}};
  variables.metrics = {MetricRow{}};
  ClusterReply cluster;
  cluster.members = {ClusterMember{}};
  ClusterStacksReply cluster_stacks;
  ClusterStackGroup group;
  group.frames = {StackFrame{}};
  cluster_stacks.groups = {group};
  ClusterStragglersReply stragglers;
  stragglers.ranks = {StragglerRow{}};
  ClusterHangReply hang;
  hang.ranks = {HangRow{}};
  return {
      FieldsOf("GET /api/targets", targets),
      FieldsOf("GET /api/<t>/overview", overview),
      FieldsOf("GET /api/<t>/stacks", stacks),
      FieldsOf("GET /api/<t>/flame", flame),
      FieldsOf("GET /api/<t>/steps", steps),
      FieldsOf("GET /api/<t>/memory", MemoryReply{}),
      FieldsOf("GET /api/<t>/variables", variables),
      FieldsOf("POST /api/<t>/query request", QueryRequest{}),
      FieldsOf("POST /api/<t>/query", QueryReply{}),
      FieldsOf("GET /api/cluster/<job>/overview", cluster),
      FieldsOf("GET /api/cluster/<job>/steps", ClusterStepsReply{}),
      FieldsOf("GET /api/cluster/<job>/stacks", cluster_stacks),
      FieldsOf("GET /api/cluster/<job>/stragglers", stragglers),
      FieldsOf("GET /api/cluster/<job>/hang", hang),
  };
}

}  // namespace probing::web
