#include "probing/base/files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace probing {
namespace {

namespace fs = std::filesystem;

class Files : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("probing_files_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(Path(name)) << text;
  }
  std::vector<std::string> Listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path dir_;
};

TEST_F(Files, AFifoNeitherHangsNorReads) {
  ASSERT_EQ(mkfifo(Path("fifo").c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto fd = OpenRegular(Path("fifo"), Follow::kYes);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().message(), Path("fifo") + " is a FIFO, not a regular file");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  EXPECT_FALSE(ReadSmallFile(Path("fifo"), 100).ok());
}

TEST_F(Files, SymlinksAreFollowedOnlyWhenAsked) {
  Write("real", "data");
  fs::create_symlink(Path("real"), Path("link"));
  auto no = ReadSmallFile(Path("link"), 100, Follow::kNo);
  ASSERT_FALSE(no.ok());
  EXPECT_EQ(no.status().message(), Path("link") + " is a symbolic link (not followed)");
  auto yes = ReadSmallFile(Path("link"), 100, Follow::kYes);
  ASSERT_TRUE(yes.ok());
  EXPECT_EQ(*yes, "data");
  EXPECT_FALSE(ReadSmallFile(Path("real"), 2).ok());  // larger than allowed
  auto missing = ReadSmallFile(Path("nope"), 100);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(OpenRegular(dir_.string(), Follow::kYes).ok());  // a directory
}

TEST_F(Files, AnOutputThatIsAnInputIsRefused) {
  Write("run.ptrace", "x");
  fs::create_directories(dir_ / "rings");
  Write("rings/stacks.ring", "y");
  fs::create_symlink(Path("run.ptrace"), Path("alias"));
  fs::create_hard_link(Path("run.ptrace"), Path("hard"));
  const std::vector<std::string> inputs = {Path("run.ptrace"), Path("rings")};
  EXPECT_FALSE(CheckNotAnInput(Path("run.ptrace"), inputs).ok());
  EXPECT_FALSE(CheckNotAnInput(Path("alias"), inputs).ok());  // through a symlink
  EXPECT_FALSE(CheckNotAnInput(Path("hard"), inputs).ok());   // and a hard link
  auto inside = CheckNotAnInput(Path("rings/stacks.ring"), inputs);
  ASSERT_FALSE(inside.ok());
  EXPECT_NE(inside.message().find("writing it would destroy what is read"), std::string::npos);
  EXPECT_TRUE(CheckNotAnInput(Path("new.db"), inputs).ok());
  EXPECT_TRUE(CheckNotAnInput("/dev/null", inputs).ok());
  EXPECT_TRUE(SameFile(Path("alias"), Path("hard")));
  EXPECT_FALSE(SameFile(Path("alias"), Path("nope")));
}

TEST_F(Files, AnOutputIsWholeOrNothing) {
  Write("out.svg", "old");
  {
    auto out = OutputFile::Open(Path("out.svg"));
    ASSERT_TRUE(out.ok()) << out.status().message();
    (*out)->stream() << "half";
    // dropped without Commit: an error on the way
  }
  EXPECT_EQ(Listing(), std::vector<std::string>{"out.svg"});
  EXPECT_EQ(*ReadSmallFile(Path("out.svg"), 100), "old");
  auto out = OutputFile::Open(Path("out.svg"));
  ASSERT_TRUE(out.ok());
  (*out)->stream() << "new";
  ASSERT_TRUE((*out)->Commit().ok());
  EXPECT_EQ(*ReadSmallFile(Path("out.svg"), 100), "new");
  EXPECT_EQ(Listing(), std::vector<std::string>{"out.svg"});
  struct stat st;
  ASSERT_EQ(stat(Path("out.svg").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666 & ~[] {
    mode_t m = umask(0);
    umask(m);
    return m;
  }());
  EXPECT_FALSE(OutputFile::Open(dir_.string()).ok());  // a directory
}

TEST_F(Files, AFullDeviceFailsTheCommit) {
  auto out = OutputFile::Open("/dev/full");
  ASSERT_TRUE(out.ok()) << out.status().message();
  (*out)->stream() << std::string(1 << 16, 'x');
  auto st = (*out)->Commit();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace probing
