// The parts of backup_database / restore_database that run beside each other for speed: the
// post-data schema cut into pieces that build indexes on several connections at once, and the
// schema dump that runs while the tables are copied (its failure must still fail the set).

#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/postgres.hpp>

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "pg_fixtures.hpp"

namespace {

namespace fs = std::filesystem;
namespace pg = connpool::postgres;
using connpool::JobState;
using connpool::testing::PgPool;
using connpool::testing::PgRunner;
using connpool::testing::PgTest;
using connpool::testing::pg_pool_options;

// The shape of pg_dump 15's plain post-data output, with the SET lines it puts between objects.
constexpr const char* post_data_sql = R"(--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

SET default_tablespace = '';

--
-- Name: a a_pkey; Type: CONSTRAINT; Schema: public; Owner: me
--

ALTER TABLE ONLY public.a
    ADD CONSTRAINT a_pkey PRIMARY KEY (id);


SET default_tablespace = fast;

--
-- Name: b_note; Type: INDEX; Schema: public; Owner: me; Tablespace: fast
--

CREATE INDEX b_note ON public.b USING btree (note);


SET default_tablespace = '';

--
-- Name: b b_a_fkey; Type: FK CONSTRAINT; Schema: public; Owner: me
--

ALTER TABLE ONLY public.b
    ADD CONSTRAINT b_a_fkey FOREIGN KEY (a) REFERENCES public.a(id);


--
-- Name: Type: INDEX; odd; Type: TRIGGER; Schema: public; Owner: me
--

CREATE TRIGGER "Type: INDEX; odd" AFTER INSERT ON public.b FOR EACH ROW EXECUTE FUNCTION public.f();


--
-- PostgreSQL database dump complete
--
)";

TEST(PostgresPostData, is_cut_at_each_object_with_the_set_state_before_it) {
    const auto post = pg::detail::split_post_data(post_data_sql);
    EXPECT_NE(post.preamble.find("set_config('search_path', '', false)"), std::string::npos);
    EXPECT_EQ(post.preamble.find("-- Name:"), std::string::npos);
    ASSERT_EQ(post.pieces.size(), 4u);
    EXPECT_EQ(post.pieces[0].type, "CONSTRAINT");
    EXPECT_EQ(post.pieces[1].type, "INDEX");
    EXPECT_EQ(post.pieces[2].type, "FK CONSTRAINT");
    EXPECT_EQ(post.pieces[3].type, "TRIGGER") << "the type is read from the end: a name cannot fake it";
    EXPECT_TRUE(pg::detail::runs_in_parallel(post.pieces[0]));
    EXPECT_TRUE(pg::detail::runs_in_parallel(post.pieces[1]));
    EXPECT_FALSE(pg::detail::runs_in_parallel(post.pieces[2]));
    EXPECT_FALSE(pg::detail::runs_in_parallel(post.pieces[3]));
    // Each piece runs after the tablespace its place in the script had, wherever it runs.
    const auto last_tablespace = [](const std::string& sql) {
        const auto at = sql.rfind("SET default_tablespace = ", sql.find("-- Name:"));
        return sql.substr(at, sql.find('\n', at) - at);
    };
    EXPECT_EQ(last_tablespace(post.pieces[0].sql), "SET default_tablespace = '';");
    EXPECT_EQ(last_tablespace(post.pieces[1].sql), "SET default_tablespace = fast;");
    EXPECT_EQ(last_tablespace(post.pieces[2].sql), "SET default_tablespace = '';");
    EXPECT_NE(post.pieces[1].sql.find("CREATE INDEX b_note"), std::string::npos);
    EXPECT_EQ(post.pieces[1].sql.find("FOREIGN KEY"), std::string::npos);
}

TEST(PostgresPostData, without_objects_is_all_preamble) {
    const auto post = pg::detail::split_post_data("SET statement_timeout = 0;\n");
    EXPECT_TRUE(post.pieces.empty());
    EXPECT_EQ(post.preamble, "SET statement_timeout = 0;\n");
}

class PostgresParallelSchema : public PgTest {};

TEST_F(PostgresParallelSchema, a_restore_builds_many_indexes_on_several_connections_and_keeps_the_foreign_keys) {
    pg::Connection c = direct();
    c.exec("CREATE TABLE a (id int PRIMARY KEY, v text UNIQUE)");
    c.exec("CREATE TABLE b (id int PRIMARY KEY, a int REFERENCES a, note text)");
    for (int i = 0; i < 6; ++i) c.exec("CREATE INDEX b_note_" + std::to_string(i) + " ON b (note, id) WHERE id % 6 = " + std::to_string(i));
    c.exec("INSERT INTO a SELECT i, 'v' || i FROM generate_series(1, 300) i");
    c.exec("INSERT INTO b SELECT i, 1 + i % 300, 'n' || i FROM generate_series(1, 3000) i");
    const fs::path dir = fs::temp_directory_path() / ("connpool-post-data-" + db_);
    fs::remove_all(dir);
    {
        PgPool pool(factory(), pg_pool_options(3));
        PgRunner runner(pool);
        auto backup = pg::backup_database(runner, dir);
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    const std::string target = db_ + "_r";
    ASSERT_EQ(server().psql("CREATE DATABASE " + target), 0);
    {
        PgPool pool(pg::Factory(server().conninfo(target)), pg_pool_options(3));
        PgRunner runner(pool);
        auto restore = pg::restore_database(runner, dir);
        ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
        pg::Connection t = pg::Factory(server().conninfo(target)).create();
        EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'"), "9"); // 2 pkeys, 1 unique, 6
        EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"), "1");
        EXPECT_THROW(t.exec("INSERT INTO b VALUES (99999, 4242, 'x')"), pg::Error);
        // The helpers ran pg_dump's session SETs (search_path = ''): none of them is pooled again.
        std::vector<connpool::Lease<pg::Connection>> all;
        for (std::size_t i = 0; i < 3; ++i) {
            all.push_back(pool.acquire());
            EXPECT_EQ(all.back()->query_value("SHOW search_path"), "\"$user\", public") << "lease " << i;
        }
    }
    server().psql("DROP DATABASE IF EXISTS " + target + " WITH (FORCE)");
    fs::remove_all(dir);
}

TEST_F(PostgresParallelSchema, a_schema_dump_that_fails_while_the_tables_are_copied_fails_the_set) {
    pg::Connection c = direct();
    c.exec("CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a SELECT generate_series(1, 1000)");
    const fs::path dir = fs::temp_directory_path() / ("connpool-schema-fail-" + db_);
    fs::remove_all(dir);
    fs::create_directories(dir);
    // Answers --version as pg_dump 15 does, and fails every dump.
    const fs::path fake = dir / "fake_pg_dump";
    std::ofstream(fake) << "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'pg_dump (PostgreSQL) 15.99'; exit 0; }\n"
                           "echo 'fake pg_dump: no schema today' >&2; exit 3\n";
    ::chmod(fake.c_str(), 0755);
    PgPool pool(factory(), pg_pool_options(3));
    PgRunner runner(pool);
    pg::DatabaseBackupOptions options;
    options.pg_dump = fake;
    auto backup = pg::backup_database(runner, dir / "set", options);
    EXPECT_EQ(backup.wait(), JobState::failed);
    EXPECT_NE(backup.error().find("no schema today"), std::string::npos) << backup.error();
    EXPECT_FALSE(fs::exists(dir / "set" / "manifest.json"));
    fs::remove_all(dir);
}

} // namespace
