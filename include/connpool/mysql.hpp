#pragma once

// connpool::mysql: pooled MySQL/MariaDB connections (MariaDB Connector/C; speaks to MySQL and
// MariaDB servers). Link connpool::mysql.

#include "mysql/cancel.hpp"     // IWYU pragma: export
#include "mysql/connection.hpp" // IWYU pragma: export
#include "mysql/error.hpp"      // IWYU pragma: export
#include "mysql/factory.hpp"    // IWYU pragma: export
#include "mysql/options.hpp"    // IWYU pragma: export
