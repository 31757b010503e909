// Smallest program against connpool::connpool and connpool::sqlite, as a FetchContent user builds it.
#include <connpool.hpp>
#include <connpool/sqlite.hpp>

struct Conn {
  int id;
};

struct Factory {
  int next = 0;
  Conn create() { return Conn{++next}; }
};

int main() {
  connpool::Pool pool{Factory{}, connpool::PoolOptions{.max_size = 2}};
  auto lease = pool.acquire();

  connpool::Pool db{connpool::sqlite::Factory{":memory:"}, connpool::PoolOptions{.max_size = 1}};
  const bool sqlite_ok = db.acquire()->query_int("SELECT 6 * 7") == 42;
  return lease->id == 1 && sqlite_ok ? 0 : 1;
}
