// The terminal view (monitor/terminal.hpp): the exact plain lines for fixed snapshots, live
// frames that fit 80 and 160 columns, more jobs than rows, NO_COLOR, hostile names, and a
// real pseudo-terminal.
#include <connpool/monitor/terminal.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pty.h> // openpty
#include <sys/ioctl.h>
#include <unistd.h>

using namespace std::chrono_literals;
using connpool::JobKind;
using connpool::JobState;
using connpool::Progress;
using connpool::monitor::TerminalOptions;
using connpool::monitor::TerminalView;

namespace {

/// A FILE that collects what is written to it.
class Capture {
public:
    Capture() : file_(::open_memstream(&buffer_, &size_)) {}
    Capture(const Capture&) = delete;
    Capture& operator=(const Capture&) = delete;
    ~Capture() {
        std::fclose(file_);
        std::free(buffer_);
    }
    [[nodiscard]] std::FILE* file() const { return file_; }
    /// Returns everything written so far.
    std::string text() {
        std::fflush(file_);
        return std::string(buffer_, size_);
    }

private:
    char* buffer_ = nullptr;
    std::size_t size_ = 0;
    std::FILE* file_;
};

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

class TerminalTest : public ::testing::Test {
protected:
    static Progress job(std::uint64_t id, std::string name, JobState state, std::uint64_t done = 0, std::uint64_t total = 0) {
        Progress p;
        p.id = id;
        p.name = std::move(name);
        p.state = state;
        p.done = done;
        p.total = total;
        if (state != JobState::queued) p.unit = "pages";
        p.elapsed = 2500ms;
        p.waited = 1200ms;
        p.rate = 512;
        if (state == JobState::running && total) p.eta = 3s;
        return p;
    }

    /// Three jobs: running with a restart, queued, failed.
    static std::vector<Progress> three() {
        auto a = job(1, "orders_1.db", JobState::running, 1024, 4096);
        a.restarts = 2;
        auto b = job(2, "orders_2.db", JobState::queued);
        auto c = job(3, "orders_3.db", JobState::failed, 10, 4096);
        c.error = "cannot write backup '/b/orders_3.db': disk full";
        return {a, b, c};
    }

    TerminalOptions options(bool live, std::size_t width, std::size_t height = 0) {
        TerminalOptions o;
        o.live = live;
        o.width = width;
        o.height = height;
        o.page_size = 4096;
        o.color = false;
        o.now = [this] { return now; };
        return o;
    }

    std::chrono::steady_clock::time_point now{};
    Capture out;
};

TEST_F(TerminalTest, plain_lines_are_timestamped_and_exact) {
    TerminalView view(out.file(), options(false, 160));
    view.show(three());
    now += 1500ms;
    auto jobs = three();
    jobs[0].done = 4096;
    jobs[0].state = JobState::succeeded;
    jobs[0].eta = 0s;
    view.show(jobs);
    EXPECT_EQ(out.text(),
              "[  0.0s] orders_1.db  backup   running     25%  1,024/4,096 pages   2.0 MiB/s  ETA 3.0s   waited 1.2s   restarts 2\n"
              "[  0.0s] orders_2.db  backup   queued        -  waiting for a connection 1.2s\n"
              "[  0.0s] orders_3.db  backup   failed       0%     10/4,096 pages   2.0 MiB/s  in  2.5s   waited 1.2s   error: cannot write backup '/b/orders_3.db': disk full\n"
              "[  1.5s] orders_1.db  backup   succeeded  100%  4,096/4,096 pages   2.0 MiB/s  in  2.5s   waited 1.2s   restarts 2\n");
}

TEST_F(TerminalTest, live_frames_fit_80_and_160_columns_and_redraw_in_place) {
    for (const std::size_t width : {80u, 160u}) {
        SCOPED_TRACE(width);
        Capture capture;
        TerminalView view(capture.file(), options(true, width));
        view.show(three());
        view.show(three());
        const std::string text = capture.text();
        const auto lines = lines_of(text);
        ASSERT_EQ(lines.size(), 6u);
        for (const auto& line : lines) EXPECT_LE(TerminalView::columns(line), width - 1) << line;
        EXPECT_NE(text.find("\x1b[3A"), std::string::npos) << "the second frame moves back up over the first";
        EXPECT_NE(lines[0].find("restarts 2"), std::string::npos) << "restarts shown apart from done/total";
        EXPECT_NE(lines[0].find("[#"), std::string::npos) << "a bar";
        EXPECT_NE(lines[0].find(" 25%"), std::string::npos);
    }
}

TEST_F(TerminalTest, live_frame_at_80_columns_is_exact) {
    TerminalView view(out.file(), options(true, 80));
    view.show(three());
    EXPECT_EQ(out.text(),
              "\r\x1b[2Korders_1.db  running    [###.........]   25%   2.0 MiB/s  ETA 3.0s   restarts 2\n"
              "\r\x1b[2Korders_2.db  queued     [............]     -  waiting for a connection 1.2s\n"
              "\r\x1b[2Korders_3.db  failed     [............]    0%   2.0 MiB/s  in  2.5s   error: can\n");
}

TEST_F(TerminalTest, more_jobs_than_rows_shows_the_running_ones_and_summarises_the_rest) {
    std::vector<Progress> jobs;
    for (std::uint64_t i = 1; i <= 30; ++i)
        jobs.push_back(job(i, "db" + std::to_string(i), i % 10 == 0 ? JobState::running : i < 15 ? JobState::succeeded : JobState::queued, 5, 10));
    TerminalView view(out.file(), options(true, 80, /*height=*/5));
    view.show(jobs);
    const auto lines = lines_of(out.text());
    ASSERT_EQ(lines.size(), 5u);
    EXPECT_NE(lines[0].find("db10 "), std::string::npos);
    EXPECT_NE(lines[1].find("db15 "), std::string::npos) << "after the running ones, the first queued";
    EXPECT_NE(lines[2].find("db20 "), std::string::npos);
    EXPECT_NE(lines[3].find("db30 "), std::string::npos) << "in submission order on screen";
    EXPECT_EQ(lines[4], "\r\x1b[2K... 26 more: 13 queued, 13 succeeded");
}

TEST_F(TerminalTest, colour_only_when_asked_and_no_color_turns_it_off) {
    auto o = options(true, 120);
    o.color = true;
    TerminalView coloured(out.file(), o);
    coloured.show(three());
    EXPECT_NE(out.text().find("\x1b[36mrunning"), std::string::npos);
    ::setenv("NO_COLOR", "1", 1);
    EXPECT_FALSE(connpool::monitor::color_allowed());
    ::setenv("NO_COLOR", "", 1);
    EXPECT_TRUE(connpool::monitor::color_allowed()) << "no-color.org: only a non-empty value counts";
    ::unsetenv("NO_COLOR");
    EXPECT_TRUE(connpool::monitor::color_allowed());
}

TEST_F(TerminalTest, hostile_names_cannot_move_the_cursor_or_break_lines) {
    auto jobs = three();
    jobs[0].name = "evil\x1b[2J\nname Z\xC3\xBCrich";
    TerminalView view(out.file(), options(false, 80));
    view.show(jobs);
    const std::string text = out.text();
    EXPECT_EQ(text.find("\x1b[2J"), std::string::npos);
    EXPECT_EQ(lines_of(text).size(), 3u);
    EXPECT_NE(text.find("evil?[2J?name Z\xC3\xBCrich"), std::string::npos) << text;
}

TEST_F(TerminalTest, a_pseudo_terminal_is_detected_with_its_width_and_gets_a_frame_that_fits) {
    int master = -1, slave = -1;
    winsize size{};
    size.ws_col = 80;
    size.ws_row = 24;
    ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, &size), 0);
    EXPECT_TRUE(::isatty(slave));
    const auto measured = connpool::monitor::terminal_size(slave);
    ASSERT_TRUE(measured);
    EXPECT_EQ(measured->first, 80u);
    EXPECT_EQ(measured->second, 24u);
    const int not_a_tty = ::open("/dev/null", O_WRONLY);
    EXPECT_FALSE(connpool::monitor::terminal_size(not_a_tty));
    EXPECT_FALSE(connpool::monitor::is_live_terminal(not_a_tty));
    ::close(not_a_tty);

    std::FILE* tty = ::fdopen(::dup(slave), "w");
    ASSERT_NE(tty, nullptr);
    {
        TerminalView view(tty, options(true, measured->first));
        view.show(three());
    }
    std::fclose(tty);
    std::string got;
    char buffer[4096];
    pollfd p{master, POLLIN, 0};
    while (::poll(&p, 1, 200) > 0) {
        const ssize_t n = ::read(master, buffer, sizeof buffer);
        if (n <= 0) break;
        got.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(slave);
    ::close(master);
    const auto lines = lines_of(got);
    ASSERT_EQ(lines.size(), 3u) << got;
    for (const auto& line : lines) EXPECT_LE(TerminalView::columns(line), 79u) << line;
}

} // namespace

namespace {

/// A database backup's set (Hub::track_set) at 25 %, as Hub::sets() gives it.
connpool::monitor::SetProgress backup_set() {
    connpool::monitor::SetProgress s;
    s.name = "backup of shop";
    s.done = 1024 * 1024;
    s.total = 4 * 1024 * 1024;
    s.jobs_done = 1;
    s.jobs = 3;
    s.elapsed = 2s;
    s.rate = 512 * 1024;
    s.eta = 6s;
    return s;
}

TEST_F(TerminalTest, plain_mode_prints_a_set_summary_line_before_its_jobs) {
    TerminalView view(out.file(), options(false, 160));
    view.show(three(), {backup_set()});
    now += 1500ms;
    auto set = backup_set();
    set.state = JobState::failed;
    set.jobs_done = 3;
    set.eta.reset();
    set.error = "public.orders: disk full";
    view.show(three(), {set});
    EXPECT_EQ(out.text(),
              "[  0.0s] backup of shop  backup   running     25%  1,048,576/4,194,304 bytes   0.5 MiB/s  ETA 6.0s   jobs 1/3\n"
              "[  0.0s] orders_1.db     backup   running     25%  1,024/4,096 pages   2.0 MiB/s  ETA 3.0s   waited 1.2s   restarts 2\n"
              "[  0.0s] orders_2.db     backup   queued        -  waiting for a connection 1.2s\n"
              "[  0.0s] orders_3.db     backup   failed       0%     10/4,096 pages   2.0 MiB/s  in  2.5s   waited 1.2s   error: cannot write backup '/b/orders_3.db': disk fu\n"
              "[  1.5s] backup of shop  backup   failed      25%  1,048,576/4,194,304 bytes   0.5 MiB/s  in  2.0s   jobs 3/3  error: public.orders: disk full\n");
}

TEST_F(TerminalTest, live_frame_has_the_set_line_on_top_and_fits_80_columns) {
    TerminalView view(out.file(), options(true, 80));
    view.show(three(), {backup_set()});
    const auto lines = lines_of(out.text());
    ASSERT_EQ(lines.size(), 4u) << out.text();
    for (const auto& line : lines) EXPECT_LE(TerminalView::columns(line), 79u) << line;
    EXPECT_EQ(out.text(),
              "\r\x1b[2Kbackup of shop  running    [##.......]   25%   0.5 MiB/s  ETA 6.0s   jobs 1/3\n"
              "\r\x1b[2Korders_1.db     running    [##.......]   25%   2.0 MiB/s  ETA 3.0s   restarts 2\n"
              "\r\x1b[2Korders_2.db     queued     [.........]     -  waiting for a connection 1.2s\n"
              "\r\x1b[2Korders_3.db     failed     [.........]    0%   2.0 MiB/s  in  2.5s   error: can\n");
}

} // namespace
