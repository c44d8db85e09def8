// The /dev/fuse shim's message handling: which requests carry the kernel's kill flags, the
// INIT offer, and the INIT reply patch. Messages are built from the kernel's own structs
// (linux/fuse.h); the mount-level behaviour is in tests/e2e/upper_test.

#include "fs/kernel_shim.h"

#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>

#include <cstring>
#include <vector>

namespace imagefs::fs {
namespace kernel_shim_test {
namespace {

template <typename Args>
std::vector<uint8_t> Message(uint32_t opcode, uint64_t unique, const Args& args) {
  fuse_in_header h;
  std::memset(&h, 0, sizeof h);
  h.len = static_cast<uint32_t>(sizeof h + sizeof args);
  h.opcode = opcode;
  h.unique = unique;
  std::vector<uint8_t> out(sizeof h + sizeof args);
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, &args, sizeof args);
  return out;
}

TEST(KernelShimTest, WriteWithKillFlagIsNoted) {
  fuse_write_in w;
  std::memset(&w, 0, sizeof w);
  w.write_flags = FUSE_WRITE_KILL_SUIDGID | FUSE_WRITE_LOCKOWNER;
  KernelRequestInfo info = InspectKernelRequest(Message(FUSE_WRITE, 7, w));
  EXPECT_EQ(info.opcode, static_cast<uint32_t>(FUSE_WRITE));
  EXPECT_EQ(info.unique, 7u);
  EXPECT_TRUE(info.kill_suidgid);
  // The write-back cache's writes (FUSE_WRITE_CACHE) and lock owners are not a kill.
  w.write_flags = FUSE_WRITE_CACHE | FUSE_WRITE_LOCKOWNER;
  EXPECT_FALSE(InspectKernelRequest(Message(FUSE_WRITE, 8, w)).kill_suidgid);
}

TEST(KernelShimTest, OpenWithKillFlagIsNoted) {
  fuse_open_in o;
  std::memset(&o, 0, sizeof o);
  o.flags = 01001;  // O_WRONLY | O_TRUNC
  EXPECT_FALSE(InspectKernelRequest(Message(FUSE_OPEN, 3, o)).kill_suidgid);
  o.open_flags = FUSE_OPEN_KILL_SUIDGID;
  EXPECT_TRUE(InspectKernelRequest(Message(FUSE_OPEN, 3, o)).kill_suidgid);
}

TEST(KernelShimTest, OtherRequestsAndShortMessagesCarryNoKill) {
  // The same bit in another request's arguments means nothing.
  fuse_setattr_in s;
  std::memset(&s, 0xff, sizeof s);
  KernelRequestInfo info = InspectKernelRequest(Message(FUSE_SETATTR, 9, s));
  EXPECT_EQ(info.opcode, static_cast<uint32_t>(FUSE_SETATTR));
  EXPECT_FALSE(info.kill_suidgid);
  EXPECT_FALSE(info.offers_killpriv_v2);
  // A WRITE cut short of its arguments, and less than a header.
  fuse_write_in w;
  std::memset(&w, 0xff, sizeof w);
  std::vector<uint8_t> m = Message(FUSE_WRITE, 1, w);
  m.resize(sizeof(fuse_in_header) + 8);
  EXPECT_FALSE(InspectKernelRequest(m).kill_suidgid);
  m.resize(10);
  EXPECT_EQ(InspectKernelRequest(m).opcode, 0u);
}

TEST(KernelShimTest, InitOfferIsSeenInTheFlagsWord) {
  fuse_init_in in;
  std::memset(&in, 0, sizeof in);
  in.major = 7;
  in.minor = 45;
  in.flags = FUSE_ASYNC_READ | FUSE_INIT_EXT;
  EXPECT_FALSE(InspectKernelRequest(Message(FUSE_INIT, 2, in)).offers_killpriv_v2);
  in.flags |= FUSE_HANDLE_KILLPRIV_V2;
  KernelRequestInfo info = InspectKernelRequest(Message(FUSE_INIT, 2, in));
  EXPECT_EQ(info.opcode, static_cast<uint32_t>(FUSE_INIT));
  EXPECT_TRUE(info.offers_killpriv_v2);
  EXPECT_EQ(HandleKillprivV2Flag(), static_cast<uint32_t>(FUSE_HANDLE_KILLPRIV_V2));
}

TEST(KernelShimTest, InitReplyGetsTheFlagAndKeepsTheRest) {
  fuse_init_out out;
  std::memset(&out, 0, sizeof out);
  out.major = 7;
  out.minor = 38;
  out.flags = FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE;
  out.max_write = 1 << 20;
  std::vector<uint8_t> bytes(sizeof out);
  std::memcpy(bytes.data(), &out, sizeof out);
  ASSERT_TRUE(AddInitReplyFlags(bytes, FUSE_HANDLE_KILLPRIV_V2));
  fuse_init_out patched;
  std::memcpy(&patched, bytes.data(), sizeof patched);
  EXPECT_EQ(patched.flags, FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE | FUSE_HANDLE_KILLPRIV_V2);
  EXPECT_EQ(patched.major, 7u);
  EXPECT_EQ(patched.minor, 38u);
  EXPECT_EQ(patched.max_write, 1u << 20);
  // A reply too short to hold the flags word is left alone.
  std::vector<uint8_t> tiny(8, 0);
  EXPECT_FALSE(AddInitReplyFlags(tiny, FUSE_HANDLE_KILLPRIV_V2));
  EXPECT_EQ(tiny, std::vector<uint8_t>(8, 0));
}

TEST(KernelShimTest, KillFollowsTheVfsRule) {
  EXPECT_EQ(KillSuidSgid(06777, false), 0777u);
  EXPECT_EQ(KillSuidSgid(04755, false), 0755u);
  // set-gid without group-execute: a mandatory-locking marker, kept unless the caller is
  // outside the group.
  EXPECT_EQ(KillSuidSgid(02767, false), 02767u);
  EXPECT_EQ(KillSuidSgid(02767, true), 0767u);
  EXPECT_EQ(KillSuidSgid(06744, false), 02744u);
  EXPECT_EQ(KillSuidSgid(0644, true), 0644u);
  EXPECT_EQ(KillSuidSgid(01777, true), 01777u) << "sticky stays";
}

TEST(KernelShimTest, NoRequestReadOnThisThreadMeansNoKill) {
  EXPECT_FALSE(CurrentRequestKillsSuidSgid());
}

}  // namespace
}  // namespace kernel_shim_test
}  // namespace imagefs::fs
