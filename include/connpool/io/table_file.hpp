#pragma once

// The table backup file that the database adapters share: its format (table_file_format.hpp),
// its writer and its checked reader.

#include "table_file_format.hpp" // IWYU pragma: export
#include "table_file_reader.hpp" // IWYU pragma: export
#include "table_file_writer.hpp" // IWYU pragma: export
