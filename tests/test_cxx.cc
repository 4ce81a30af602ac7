// SPDX-License-Identifier: MIT
/*
 * test_cxx.cc - <mring.h> from C++, as a C++ trainer or a PyTorch C++
 * extension uses it: a producer written in C++ logs steps, values,
 * weighted values and an epoch end through the inline hot path (the
 * __atomic branch of include/mring/atomic.h), and a reader checks every
 * record and the epoch results.  Built once as C++17 and once as C++20
 * (tests/CMakeLists.txt), with -Wall -Wextra -Wpedantic -Werror.
 */
#include <mring.h>

#include <criterion/criterion.h>
#include <cstdlib>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

struct segment {
	std::string name, path;

	explicit segment(const char *tag)
	{
		const char *dir = std::getenv("MRING_DIR");

		name = std::string("mring-test-cxx") + std::to_string(__cplusplus / 100 % 100) +
		       "-" + tag + "-" + std::to_string(getpid());
		path = std::string(dir && *dir ? dir : "/dev/shm") + "/" + name;
		unlink(path.c_str());
	}
	~segment() { unlink(path.c_str()); }
};

std::vector<mring_event> read_all(mring_reader *r)
{
	std::vector<mring_event> out;
	mring_event ev[64];
	int n;

	while ((n = mring_read(r, ev, 64)) > 0)
		out.insert(out.end(), ev, ev + n);
	cr_assert_geq(n, 0, "mring_read: %s", mring_strerror(n));
	return out;
}

} // namespace

Test(cxx, a_cxx_producer_is_read_exactly)
{
	const uint64_t steps = 100;
	segment seg("prod");
	mring_config cfg{};
	mring_writer *w = nullptr;
	mring_reader *r = nullptr;

	cfg.capacity = 1024;
	cr_assert_eq(mring_writer_open(seg.name.c_str(), &cfg, &w), 0);
	int loss = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
	int acc = mring_metric(w, "acc", MRING_ON_EPOCH | MRING_MEAN);
	cr_assert_eq(loss, 0);
	cr_assert_eq(acc, 1);
	cr_assert_eq(mring_reader_open(seg.name.c_str(), MRING_DRAIN, &r), 0);
	for (uint64_t s = 0; s < steps; s++) {
		cr_assert_eq(mring_step(w, s), 0);
		cr_assert_eq(mring_log(w, loss, double(s) + 0.5), 0);
		cr_assert_eq(mring_log_weighted(w, acc, double(s), 2.0), 0);
	}
	cr_assert_eq(mring_writer_step(w), steps - 1);
	cr_assert_eq(mring_epoch_end(w), 0);
	cr_assert_eq(mring_writer_epoch(w), 1u);

	std::vector<mring_event> ev = read_all(r);
	cr_assert_eq(ev.size(), 2 * steps + 5, "got %zu events", ev.size());
	for (uint64_t s = 0; s < steps; s++) {
		const mring_event &st = ev[2 * s], &v = ev[2 * s + 1];

		cr_assert_eq(st.kind, unsigned(MRING_EV_STEP));
		cr_assert_eq(st.step, s);
		cr_assert_eq(st.seq, 3 * s, "a STEP takes two slots");
		cr_assert_eq(v.kind, unsigned(MRING_EV_VALUE));
		cr_assert_eq(v.metric, loss);
		cr_assert_eq(v.step, s);
		cr_assert_eq(v.epoch, 0u);
		cr_assert_eq(v.value, double(s) + 0.5);
		cr_assert_eq(v.seq, 3 * s + 2);
	}
	/* per metric in id order: mean, then its weight; then the end */
	const mring_event *e = &ev[2 * steps];
	cr_assert_eq(e[0].kind, unsigned(MRING_EV_EPOCH_VALUE));
	cr_assert_eq(e[0].metric, loss);
	cr_assert_eq(e[0].value, 50.0, "mean of 0.5 .. 99.5");
	cr_assert_eq(e[1].kind, unsigned(MRING_EV_EPOCH_WEIGHT));
	cr_assert_eq(e[1].value, 100.0);
	cr_assert_eq(e[2].kind, unsigned(MRING_EV_EPOCH_VALUE));
	cr_assert_eq(e[2].metric, acc);
	cr_assert_eq(e[2].value, 49.5, "sum(2 s) / 200");
	cr_assert_eq(e[3].kind, unsigned(MRING_EV_EPOCH_WEIGHT));
	cr_assert_eq(e[3].value, 200.0);
	cr_assert_eq(e[4].kind, unsigned(MRING_EV_EPOCH_END));
	cr_assert_eq(e[4].epoch, 0u);

	/* the statistics a monitor reads, through the C++-written latch */
	mring_stats st;
	cr_assert_eq(mring_epoch_read(r, acc, &st), 0);
	cr_assert_eq(st.count, steps);
	cr_assert_eq(st.max, double(steps - 1));
	cr_assert_eq(mring_stats_read(r, loss, &st), 0);
	cr_assert_eq(st.count, 0u, "a new epoch starts empty");
	mring_reader_close(r);
	cr_assert_eq(mring_writer_close(w), 0);
}
