// Secrets (monitor/redact.hpp): what redact() masks and keeps, and that no sink prints a secret
// that reached a job name, an error or a pool event.
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>
#include <connpool/monitor/redact.hpp>
#include <connpool/monitor/terminal.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>

#include "monitor_fixtures.hpp"

using connpool::monitor::redact;

namespace {

TEST(Redact, masks_conninfo_passwords_in_every_spelling) {
    EXPECT_EQ(redact("host=db user=app password=hunter2 dbname=x"), "host=db user=app password=*** dbname=x");
    EXPECT_EQ(redact("host=db password = 'two words' port=5432"), "host=db password = *** port=5432");
    EXPECT_EQ(redact("PASSWORD=Hunter2"), "PASSWORD=***");
    EXPECT_EQ(redact("pwd=x;uid=y"), "pwd=***;uid=y");
    EXPECT_EQ(redact("sslpassword=k3y"), "sslpassword=***");
    EXPECT_EQ(redact("https://h/x?user=a&token=abc&x=1"), "https://h/x?user=a&token=***&x=1");
    EXPECT_EQ(redact("{\"password\": \"p\\\"w\"}"), "{\"password\": ***}");
}

TEST(Redact, masks_the_password_of_a_url_but_not_the_user_or_host) {
    EXPECT_EQ(redact("postgresql://app:s3cret@db.example:5432/orders"), "postgresql://app:***@db.example:5432/orders");
    EXPECT_EQ(redact("mysql://root:pw@host/db and more"), "mysql://root:***@host/db and more");
    EXPECT_EQ(redact("postgresql://app@db/orders"), "postgresql://app@db/orders");
}

TEST(Redact, leaves_ordinary_text_alone) {
    for (const char* text : {"orders.db", "cannot write backup '/backups/x.db': no space left", "passwords.db",
                             "compass=north", "http://host:8080/path", "time: 12:30"})
        EXPECT_EQ(redact(text), text);
}

class SecretsTest : public ::testing::Test {
protected:
    void SetUp() override {
        run.hub.add(std::make_shared<connpool::monitor::JsonLinesSink>(json, connpool::monitor::JsonLinesOptions{}));
        run.run(/*pools=*/2, /*jobs=*/12);
    }
    std::ostringstream json;
    connpool::testing::MonitoredRun run;
};

TEST_F(SecretsTest, no_sink_prints_a_password_from_a_job_name_or_an_error) {
    ASSERT_NE(json.str().find("password=***"), std::string::npos) << "the run should have carried a secret";
    EXPECT_EQ(json.str().find("hunter2"), std::string::npos);

    const std::string prometheus = connpool::monitor::render_prometheus(run.hub.metrics());
    ASSERT_NE(prometheus.find("password=***"), std::string::npos);
    EXPECT_EQ(prometheus.find("hunter2"), std::string::npos);

    EXPECT_EQ(connpool::monitor::jobs_json(run.hub.jobs()).find("hunter2"), std::string::npos);

    for (const bool live : {false, true}) {
        char* buffer = nullptr;
        std::size_t size = 0;
        std::FILE* f = ::open_memstream(&buffer, &size);
        {
            connpool::monitor::TerminalView view(f, {.live = live, .width = 400});
            view.show(run.runners[0]->snapshot());
        }
        std::fclose(f);
        const std::string text(buffer, size);
        std::free(buffer);
        EXPECT_NE(text.find("password=***"), std::string::npos) << text;
        EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
    }
}

} // namespace
