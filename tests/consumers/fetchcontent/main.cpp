// Smallest program against connpool::connpool, as a FetchContent user builds it.
#include <connpool.hpp>

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
  return lease->id == 1 ? 0 : 1;
}
