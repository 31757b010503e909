#include <connpool/errors.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <type_traits>

static_assert(std::is_base_of_v<std::runtime_error, connpool::Error>);
static_assert(std::is_base_of_v<connpool::Error, connpool::AcquireTimeout>);
static_assert(std::is_base_of_v<connpool::Error, connpool::PoolClosed>);

TEST(Errors, AcquireTimeoutKeepsItsMessageAndWait) {
    const connpool::AcquireTimeout e("waited too long", std::chrono::milliseconds{250});
    EXPECT_STREQ(e.what(), "waited too long");
    EXPECT_EQ(e.waited(), std::chrono::milliseconds{250});
}

TEST(Errors, PoolClosedSaysThePoolIsClosed) {
    const connpool::PoolClosed e;
    EXPECT_NE(std::string(e.what()).find("closed"), std::string::npos);
}

TEST(Errors, AllAreCaughtAsConnpoolError) {
    EXPECT_THROW(throw connpool::PoolClosed{}, connpool::Error);
    EXPECT_THROW(throw connpool::AcquireTimeout("x", {}), connpool::Error);
}
