#include "probing/web/api.h"

#include <gtest/gtest.h>

#include <fstream>

namespace probing::web {
namespace {

TEST(WebApi, FlameNodesAreCompactArrays) {
  FlameNode root{0, 3, {FlameNode{1, 2, {}}, FlameNode{2, 1, {}}}};
  EXPECT_EQ(ToJson(root).dump(), "[0,3,[[1,2,[]],[2,1,[]]]]");
}

TEST(WebApi, AbsentValuesAreNullNeverZero) {
  MemoryReply m;
  m.ts = {1.5};
  m.rss = {100};
  m.vms = {200};
  m.py_blocks = {std::nullopt};
  m.cuda_allocated = {std::nullopt};
  m.cuda_reserved = {7};
  const Json j = ToJson(m);
  EXPECT_TRUE(j["py_blocks"][0].is_null());
  EXPECT_TRUE(j["cuda_allocated"][0].is_null());
  EXPECT_EQ(j["cuda_reserved"][0], 7);
  ProcessEntry p;
  EXPECT_TRUE(ToJson(p)["rank"].is_null());
  EXPECT_TRUE(ToJson(p)["job"].is_null());
}

TEST(WebApi, QueryCellsKeepTheirTypes) {
  QueryReply q;
  q.columns = {"a", "b", "c", "d"};
  q.rows = {{int64_t{1}, 0.5, std::string("x"), std::monostate{}}};
  EXPECT_EQ(ToJson(q)["rows"].dump(), "[[1,0.5,\"x\",null]]");
  EXPECT_EQ(Json::parse(R"({"sql": "SELECT 1"})").get<QueryRequest>().sql, "SELECT 1");
}

TEST(WebApi, DocsNameEveryField) {
  std::ifstream in(std::string(PROBING_SOURCE_DIR) + "/docs/web.md");
  ASSERT_TRUE(in) << "docs/web.md is missing";
  const std::string doc{std::istreambuf_iterator<char>(in), {}};
  for (const auto& m : AllMessageFields()) {
    const size_t path = m.message.find(' ') + 1;  // "GET /api/<t>/flame" -> "/api/<t>/flame"
    EXPECT_NE(doc.find(m.message.substr(path, m.message.find(' ', path) - path)), std::string::npos)
        << m.message << " is not in docs/web.md";
    for (const std::string& f : m.fields)
      EXPECT_TRUE(doc.find("\"" + f + "\"") != std::string::npos ||
                  doc.find("`" + f + "`") != std::string::npos)
          << m.message << ": field " << f << " is not in docs/web.md";
  }
}

}  // namespace
}  // namespace probing::web
