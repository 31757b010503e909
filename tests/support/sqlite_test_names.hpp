#pragma once

// The names the SQLite adapter tests share, brought into each test file's scope here once
// instead of by a using-list per file. Include it after the headers a test needs; only test
// translation units include it.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "sqlite_fixtures.hpp"

using namespace std::chrono_literals;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

namespace fs = std::filesystem;
namespace sqlite = connpool::sqlite;
using connpool::JobState;
using connpool::Progress;
using connpool::testing::create_demo_db;
using connpool::testing::DemoSpec;
using connpool::testing::dir_entries;
using connpool::testing::every_report;
using connpool::testing::expect_pool_consistent;
using connpool::testing::file_bytes;
using connpool::testing::file_mode;
using connpool::testing::Fingerprint;
using connpool::testing::fingerprint;
using connpool::testing::format_versions;
using connpool::testing::HandleSlot;
using connpool::testing::integrity_check;
using connpool::testing::ProgressLog;
using connpool::testing::RawDb;
using connpool::testing::Signal;
using connpool::testing::sqlite_pool_options;
using connpool::testing::SqlitePool;
using connpool::testing::SqliteRunner;
using connpool::testing::temp_files;
using connpool::testing::TempDir;
using connpool::testing::wait_job;
using connpool::testing::write_file;
