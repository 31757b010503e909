// A program that only pools SQLite connections includes connpool/sqlite/connection.hpp and the
// pool: it must get neither the job layer nor POSIX headers. Checked at compile time, before
// GoogleTest (which includes POSIX headers itself) comes in.
#include <connpool/pool.hpp>
#include <connpool/sqlite/connection.hpp>

// <fcntl.h> and <sys/file.h> (what the durable-file layer uses) define these; the standard
// library's own headers do not include them. (<unistd.h> is no sign: libstdc++ includes it.)
#if defined(O_CREAT) || defined(O_CLOEXEC) || defined(LOCK_EX)
#error "connpool/sqlite/connection.hpp pulled in a POSIX header"
#endif

// Had jobs.hpp been included, this would redefine connpool::ProgressReporter and fail to compile.
namespace connpool {
struct ProgressReporter {
    int marker = 42;
};
} // namespace connpool

#include <gtest/gtest.h>

TEST(SqliteConnectionOnly, pools_sqlite_connections_without_the_job_layer_or_posix_headers) {
    connpool::Pool pool{connpool::sqlite::Factory{":memory:"}, connpool::PoolOptions{.max_size = 1}};
    EXPECT_EQ(pool.acquire()->query_int("SELECT 6 * 7"), 42);
    EXPECT_EQ(connpool::ProgressReporter{}.marker, 42);
}
