#include "util/status.h"

#include <gtest/gtest.h>

namespace imagefs {
namespace status_test {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  return Half(h);
}

TEST(StatusTest, FromErrnoMapsCodeAndKeepsErrno) {
  Status s = Status::FromErrno(ENOSPC, "writing /x");
  EXPECT_EQ(s.code(), Code::kNoSpace);
  EXPECT_EQ(s.ToErrno(), ENOSPC);
  EXPECT_EQ(s.message(), "writing /x: No space left on device");
}

TEST(StatusTest, AssignOrReturnPropagatesTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().message(), "3 is odd");
  EXPECT_EQ(Quarter(6).status().ToErrno(), EINVAL);
}

TEST(StatusTest, WithContextPrefixesTheMessage) {
  Status s = Status::NotFound("no such tag").WithContext("pulling x");
  EXPECT_EQ(s.message(), "pulling x: no such tag");
  EXPECT_TRUE(s.IsNotFound());
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

}  // namespace
}  // namespace status_test
}  // namespace imagefs
