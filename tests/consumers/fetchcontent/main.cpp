// Smallest program against connpool::connpool and connpool::sqlite (and, in ../monitor_use.cpp,
// the monitor components), as a FetchContent user builds it.
#include <connpool.hpp>
#include <connpool/sqlite.hpp>

struct Conn {
  int id;
};

struct Factory {
  int next = 0;
  Conn create() { return Conn{++next}; }
};

int run_monitor(); // monitor_use.cpp: the monitor components

int main() {
  connpool::Pool pool{Factory{}, connpool::PoolOptions{.max_size = 2}};
  auto lease = pool.acquire();

  connpool::Pool db{connpool::sqlite::Factory{":memory:"}, connpool::PoolOptions{.max_size = 1}};
  const bool sqlite_ok = db.acquire()->query_int("SELECT 6 * 7") == 42;
  return lease->id == 1 && sqlite_ok && run_monitor() == 0 ? 0 : 1;
}
