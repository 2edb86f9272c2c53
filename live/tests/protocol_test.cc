#include "probing/live/protocol.h"

#include <gtest/gtest.h>

#include <fstream>

namespace probing::protocol {
namespace {

template <typename T>
T RoundTrip(const T& v) {
  auto back = Parse<T>(ToJson(v).dump(), "test");
  EXPECT_TRUE(back.ok()) << back.status().message();
  return back.ok() ? std::move(back).value() : T{};
}

TEST(Protocol, MessagesRoundTripThroughJson) {
  InfoReply info;
  info.pid = 4242;
  info.python_version = "3.11.2";
  info.rank = 3;
  info.enabled.tcp = true;
  info.torch.step = 17;
  InfoReply i = RoundTrip(info);
  EXPECT_EQ(i.pid, 4242);
  EXPECT_EQ(i.rank, 3);
  EXPECT_TRUE(i.enabled.tcp);
  EXPECT_EQ(i.torch.step, 17);

  BacktraceReply bt;
  ThreadBacktrace t;
  t.thread_id = 7;
  t.thread_name = "MainThread";
  t.holds_gil = true;
  Frame py;
  py.func = "forward";
  py.file = "model.py";
  py.lineno = 25;
  py.frame_type = "Python";
  py.locals = std::map<std::string, std::string>{{"x", "tensor(...)"}};
  Frame native;
  native.func = "__clock_nanosleep";
  native.frame_type = "Native";
  native.ip = "0x7f";
  native.offset = 202;
  t.frames = {py, native};
  bt.threads = {t};
  BacktraceReply b = RoundTrip(bt);
  ASSERT_EQ(b.threads.size(), 1u);
  ASSERT_EQ(b.threads[0].frames.size(), 2u);
  EXPECT_EQ(b.threads[0].frames[0].locals->at("x"), "tensor(...)");
  EXPECT_FALSE(b.threads[0].frames[1].lineno.has_value());  // null on the wire
  EXPECT_EQ(b.threads[0].frames[1].offset, 202);
  EXPECT_FALSE(b.locals_error.has_value());

  EvalReply ev;
  ev.out = "hi\n";
  ev.exception = EvalException{"ZeroDivisionError", "division by zero", "Traceback ..."};
  EvalReply e = RoundTrip(ev);
  EXPECT_EQ(e.out, "hi\n");
  EXPECT_FALSE(e.value.has_value());
  EXPECT_EQ(e.exception->type, "ZeroDivisionError");
  EXPECT_EQ(ToJson(ev)["stdout"], "hi\n");  // the wire names

  TableRowsReply rows;
  rows.columns = {{"item", "TEXT"}, {"count", "INTEGER"}};
  rows.rows = {{std::string("apple"), int64_t{3}}, {std::monostate{}, 2.5}};
  TableRowsReply r = RoundTrip(rows);
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(std::get<int64_t>(r.rows[0][1]), 3);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(r.rows[1][0]));
}

TEST(Protocol, WhatDoesNotFitIsRefusedWithAReason) {
  auto bad = Parse<InfoReply>(R"({"pid": "x"})", "info");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("the answer to info"), std::string::npos);
  EXPECT_FALSE(Parse<InfoReply>("<html>", "info").ok());
  // A custom table whose rows do not match its columns.
  EXPECT_FALSE(Parse<TableRowsReply>(R"({"columns": [{"name": "a", "type": "TEXT"}],
                                          "rows": [["x", 1]]})",
                                     "table")
                   .ok());
}

TEST(Protocol, RequestsRoundTripThroughTheirQueryStrings) {
  BacktraceRequest b;
  b.thread = 4250;
  b.native = true;
  auto t = ParseRequestTarget(b.Target());
  EXPECT_EQ(t.path, "/backtrace");
  auto back = BacktraceRequest::FromQuery(t.query);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->thread, 4250u);
  EXPECT_TRUE(back->native);
  EXPECT_FALSE(back->locals);
  EXPECT_FALSE(BacktraceRequest::FromQuery({{"thread", "12abc"}}).ok());

  SegmentsRequest s;
  s.from = {{"stacks", 12}, {"memory", 3}};
  s.rings = {"stacks", "memory"};
  s.seal = true;
  s.max_bytes = 1000;
  auto st = ParseRequestTarget(s.Target());
  EXPECT_EQ(st.path, "/segments");
  auto sb = SegmentsRequest::FromQuery(st.query);
  ASSERT_TRUE(sb.ok()) << sb.status().message();
  EXPECT_EQ(sb->from, s.from);
  EXPECT_EQ(sb->rings, s.rings);
  EXPECT_TRUE(sb->seal);
  EXPECT_EQ(sb->max_bytes, 1000u);
  EXPECT_FALSE(SegmentsRequest::FromQuery({{"from", "stacks"}}).ok());
  EXPECT_FALSE(SegmentsRequest::FromQuery({{"max_bytes", "0"}}).ok());
  EXPECT_EQ(ParseRequestTarget("/config?key=probing.sampler.hz%3D1").query.at("key"),
            "probing.sampler.hz=1");
}

// docs/protocol.md is the protocol's reference: every field of every message must be named
// there, as `field` or "field".
TEST(Protocol, TheDocumentNamesEveryField) {
  std::ifstream in(std::string(PROBING_SOURCE_DIR) + "/docs/protocol.md");
  ASSERT_TRUE(in) << "docs/protocol.md is missing";
  const std::string doc{std::istreambuf_iterator<char>(in), {}};
  for (const MessageFields& m : AllMessageFields())
    for (const std::string& f : m.fields)
      EXPECT_TRUE(doc.find("\"" + f + "\"") != std::string::npos ||
                  doc.find("`" + f + "`") != std::string::npos)
          << m.message << ": field " << f << " is not in docs/protocol.md";
}

}  // namespace
}  // namespace probing::protocol
