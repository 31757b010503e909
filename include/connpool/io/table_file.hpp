#pragma once

// The table backup file that the database adapters share: its format (table_file_format.hpp),
// its writer and its checked reader.

#include "table_file_format.hpp" // IWYU pragma: export
#include "table_file_reader.hpp" // IWYU pragma: export
#include "table_file_writer.hpp" // IWYU pragma: export

#include <cstdint>

#include "durable_file.hpp"

namespace connpool::io {

namespace detail {

/// From this size of data on, a table file's read-back runs beside its fsync (on a thread); a
/// smaller file's read-back takes less than starting a thread (~0.3 ms here).
inline constexpr std::uint64_t parallel_sync_min_bytes = 4u << 20;

} // namespace detail

/// Makes the finished table file in `temp` (`data_bytes` of data) durable. With `verify`, it is
/// first read back whole by `read_back` (which opens it with the adapter's reader and throws
/// io::Error when it does not check out). The read-back goes through the page cache, so for a
/// large file the fsync runs beside it. Both end before the caller publishes the file.
template <class ReadBack>
void sync_table_file(const TempFile& temp, std::uint64_t data_bytes, bool verify, ReadBack&& read_back) {
    if (!verify) {
        temp.sync();
    } else if (data_bytes < detail::parallel_sync_min_bytes) {
        read_back();
        temp.sync();
    } else {
        temp.sync_while(read_back);
    }
}

} // namespace connpool::io
