// SPDX-License-Identifier: MIT
/*
 * sink_tfevents.c - `mring drain --tensorboard DIR`: TensorBoard event files.
 *
 * A tfevents file is a plain sequence of TFRecords, each holding one
 * serialized tensorboard.Event (protobuf, proto3):
 *
 *	uint64 len | uint32 masked_crc32c(len bytes) | data[len] | uint32 masked_crc32c(data)
 *
 * all little-endian, no file header or footer.  The first record is
 * Event{wall_time, file_version="brain.Event:2"}; TensorBoard keys its
 * restart handling on that version.  Each row then becomes one Event with
 * a Summary of legacy simple_value scalars, as torch's SummaryWriter
 * writes by default.  We encode the few fields we need by hand instead
 * of linking a protobuf runtime into the tool.
 *
 * Durability: rows are encoded into a memory buffer and written with
 * pwrite(2) at our own file offset when it passes TFEV_FLUSH_AT or at
 * commit; commit adds fsync(2).  The drain state records the committed
 * size and the file's basename (sink_state.extra).  On resume we truncate
 * the file back to that size, which removes whatever a killed drainer
 * wrote after its last commit, so no event appears twice.
 *
 * Errors: a failed write or fsync rolls the file back to the last
 * committed size and drops every row handed to us since that commit.
 * That is the same position the drain state is at, so a later commit
 * never claims bytes that did not reach the disk, and a restart from the
 * state re-reads the dropped rows from the ring.
 *
 * Resume errors: the file is missing: -ENOENT; it is shorter than the
 * committed size (someone else truncated it, so events we promised are
 * gone): -EIO; the committed size does not end a record, or the file
 * does not start with our version record (the state is damaged or the
 * file was changed): -EBADMSG; the recorded name is not a plain tfevents basename: -EINVAL;
 * a symlink: -ELOOP (the directory may be shared: never follow one);
 * another drain has it open: -EBUSY.
 *
 * Leftovers.  A drain killed after creating its file and before a state
 * named it leaves a file that is empty or holds only the version record.
 * A fresh open removes such files of ours in DIR, rather than reusing
 * one: a new file is named for this process like every other, and
 * removing loses nothing (no event is in it).  A live sink is told apart
 * by the flock(2) it holds from right after creating its file (and one
 * whose empty file a scan removed before the lock creates it again); a
 * file we cannot lock, or one with more in it, is never touched.  A state that committed nothing but the
 * version record therefore resumes into a new file when its file is gone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "sink.h"
#include "text.h"
#include "util.h"

#define TFEV_FLUSH_AT	(64 * 1024)	/* write(2) once the buffer passes this */
#define TFEV_VERSION	"brain.Event:2"
#define TFEV_LOST_TAG	"mring/lost"
#define TFEV_HDR	12		/* length + its CRC */
#define TFEV_FTR	4		/* data CRC */
#define TFEV_CRC_MASK_DELTA 0xa282ead8u
/* the version record: wall_time (1 + 8), file_version (1 + 1 + 13) */
#define TFEV_VERSION_REC (TFEV_HDR + 9 + 2 + sizeof(TFEV_VERSION) - 1 + TFEV_FTR)
#define TFEV_PREFIX	"events.out.tfevents."
#define TFEV_SUFFIX	".mring"

/* protobuf keys: (field number << 3) | wire type */
#define PB_EVENT_WALL_TIME	0x09	/* 1, fixed64 (double) */
#define PB_EVENT_STEP		0x10	/* 2, varint (int64) */
#define PB_EVENT_FILE_VERSION	0x1a	/* 3, length-delimited (string) */
#define PB_EVENT_SUMMARY	0x2a	/* 5, length-delimited (Summary) */
#define PB_SUMMARY_VALUE	0x0a	/* Summary.value 1, length-delimited */
#define PB_VALUE_TAG		0x0a	/* Value.tag 1, length-delimited */
#define PB_VALUE_SIMPLE		0x15	/* Value.simple_value 2, fixed32 (float) */

struct sink {
	int fd;
	char *path;		/* dir + "/" + base */
	const char *base;	/* points into path */
	uint64_t committed;	/* file size at the last commit (durable) */
	uint64_t flushed;	/* file offset where the next pwrite goes */
	bool trunc_pending;	/* a rollback's ftruncate failed: retry first */
	struct buf out;		/* encoded records not yet written */
};

/* ---- CRC-32C (Castagnoli), reflected poly 0x82F63B78 ---- */

static uint32_t crc32c_table[256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & -(c & 1));
		crc32c_table[i] = c;
	}
}

static uint32_t tfevents_crc32c(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint32_t c = 0xffffffffu;

	pthread_once(&crc32c_once, crc32c_init);
	while (n--)
		c = crc32c_table[(c ^ *b++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

/*
 * TFRecord stores CRCs "masked" (leveldb crc32c::Mask), because a CRC of
 * data that itself embeds CRCs is weak.
 */
static uint32_t tfevents_mask(uint32_t crc)
{
	return ((crc >> 15) | (crc << 17)) + TFEV_CRC_MASK_DELTA;
}

/* ---- little-endian and protobuf primitives ---- */

static unsigned char *put_le(unsigned char *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		*p++ = (unsigned char)(v >> (8 * i));
	return p;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static unsigned char *put_varint(unsigned char *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	*p++ = (unsigned char)v;
	return p;
}

static unsigned char *put_double(unsigned char *p, double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return put_le(p, u, 8);
}

static unsigned char *put_float(unsigned char *p, float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return put_le(p, u, 4);
}

static unsigned char *put_bytes(unsigned char *p, int key, const void *s, size_t n)
{
	*p++ = (unsigned char)key;
	p = put_varint(p, n);
	memcpy(p, s, n);
	return p + n;
}

/* ---- the record buffer ---- */

/*
 * Frame the @dlen payload bytes already encoded at buf + len + TFEV_HDR
 * and make them part of the buffer.
 */
static void record_seal(struct sink *s, size_t dlen)
{
	unsigned char *r = (unsigned char *)s->out.p + s->out.len;
	unsigned char *d = r + TFEV_HDR;

	put_le(r, dlen, 8);
	put_le(r + 8, tfevents_mask(tfevents_crc32c(r, 8)), 4);
	put_le(d + dlen, tfevents_mask(tfevents_crc32c(d, dlen)), 4);
	s->out.len += TFEV_HDR + dlen + TFEV_FTR;
}

/* Event{wall_time, file_version="brain.Event:2"}: every file starts so. */
static int tfevents_put_version(struct sink *s, double wall_time)
{
	size_t vlen = strlen(TFEV_VERSION);
	size_t dlen = 9 + 1 + varint_len(vlen) + vlen;
	unsigned char *p;
	int err;

	err = buf_reserve(&s->out, TFEV_HDR + dlen + TFEV_FTR);
	if (err)
		return err;
	p = (unsigned char *)s->out.p + s->out.len + TFEV_HDR;
	*p++ = PB_EVENT_WALL_TIME;
	p = put_double(p, wall_time);
	put_bytes(p, PB_EVENT_FILE_VERSION, TFEV_VERSION, vlen);
	record_seal(s, dlen);
	return 0;
}

/* "rank<N>/" keeps the ranks of one run apart in one TensorBoard run. */
static int tag_prefix(char *pfx, size_t size, int32_t rank)
{
	if (rank < 0) {
		pfx[0] = '\0';
		return 0;
	}
	return snprintf(pfx, size, "rank%d/", (int)rank);
}

static size_t value_len(size_t taglen)
{
	return 1 + varint_len(taglen) + taglen + 1 + 4;
}

/* Summary.value entry: {tag = pfx + key, simple_value = v} */
static unsigned char *put_value(unsigned char *p, const char *pfx, size_t plen,
				const char *key, size_t klen, float v)
{
	*p++ = PB_SUMMARY_VALUE;
	p = put_varint(p, value_len(plen + klen));
	*p++ = PB_VALUE_TAG;
	p = put_varint(p, plen + klen);
	memcpy(p, pfx, plen);
	memcpy(p + plen, key, klen);
	p += plen + klen;
	*p++ = PB_VALUE_SIMPLE;
	return put_float(p, v);
}

/*
 * One Event{wall_time, step, summary{value...}} for @n scalars.  Values
 * are narrowed to float as simple_value is; NaN and Inf stay what they
 * are, since TensorBoard plots them.  proto3 leaves a zero step out.
 */
static int tfevents_put_scalars(struct sink *s, double wall_time, uint64_t step,
				int32_t rank, int n, const char *const *keys,
				const double *vals)
{
	char pfx[24];
	size_t plen = (size_t)tag_prefix(pfx, sizeof(pfx), rank);
	size_t slen = 0, dlen;
	unsigned char *p;
	int err;

	if (n <= 0)
		return 0;	/* nothing to plot: no empty events */
	for (int i = 0; i < n; i++) {
		size_t vl = value_len(plen + strlen(keys[i]));

		slen += 1 + varint_len(vl) + vl;
	}
	dlen = 9 + (step ? 1 + varint_len(step) : 0) + 1 + varint_len(slen) + slen;
	err = buf_reserve(&s->out, TFEV_HDR + dlen + TFEV_FTR);
	if (err)
		return err;

	p = (unsigned char *)s->out.p + s->out.len + TFEV_HDR;
	*p++ = PB_EVENT_WALL_TIME;
	p = put_double(p, wall_time);
	if (step) {
		*p++ = PB_EVENT_STEP;
		p = put_varint(p, step);
	}
	*p++ = PB_EVENT_SUMMARY;
	p = put_varint(p, slen);
	for (int i = 0; i < n; i++)
		p = put_value(p, pfx, plen, keys[i], strlen(keys[i]), (float)vals[i]);
	record_seal(s, dlen);
	return 0;
}

static double now_s(void);
static int flush(struct sink *s);

/* ---- the hparams plugin ---- */

/*
 * TensorBoard's hparams plugin reads two summaries per run, each a
 * Summary.Value whose metadata.plugin_data names "hparams" and carries a
 * serialized HParamsPluginData (tensorboard/plugins/hparams/
 * plugin_data.proto, version 0 left out as proto3 does), and whose
 * tensor is the plugin's NULL_TENSOR (a DT_FLOAT tensor of shape [0]):
 *   _hparams_/session_start_info: session_start_info (3) = {
 *       hparams (1): map<string, google.protobuf.Value>,
 *       start_time_secs (5): double }
 *   _hparams_/session_end_info: session_end_info (4) = {
 *       status (1): STATUS_SUCCESS 1 / STATUS_FAILURE 2,
 *       end_time_secs (2): double }
 * A map entry is {key (1), value (2)}; a Value is one of null_value (1,
 * enum 0), number_value (2, double), string_value (3), bool_value (4),
 * written even when zero (a oneof).
 */
#define HP_PLUGIN		"hparams"
#define HP_START_TAG		"_hparams_/session_start_info"
#define HP_END_TAG		"_hparams_/session_end_info"
#define PB_VALUE_TENSOR		0x42	/* Summary.Value.tensor 8 */
#define PB_VALUE_METADATA	0x4a	/* Summary.Value.metadata 9 */
#define PB_META_PLUGIN_DATA	0x0a	/* SummaryMetadata.plugin_data 1 */
#define PB_PLUGIN_NAME		0x0a	/* PluginData.plugin_name 1 */
#define PB_PLUGIN_CONTENT	0x12	/* PluginData.content 2 */
#define PB_HP_START		0x1a	/* HParamsPluginData.session_start_info 3 */
#define PB_HP_END		0x22	/* HParamsPluginData.session_end_info 4 */
#define PB_START_HPARAMS	0x0a	/* SessionStartInfo.hparams 1 (map) */
#define PB_START_TIME		0x29	/* SessionStartInfo.start_time_secs 5, double */
#define PB_END_STATUS		0x08	/* SessionEndInfo.status 1, enum */
#define PB_END_TIME		0x11	/* SessionEndInfo.end_time_secs 2, double */
#define PB_ENTRY_KEY		0x0a	/* map entry key 1 */
#define PB_ENTRY_VALUE		0x12	/* map entry value 2 */
#define PB_PV_NULL		0x08	/* google.protobuf.Value.null_value 1 */
#define PB_PV_NUMBER		0x11	/* number_value 2, double */
#define PB_PV_STRING		0x1a	/* string_value 3 */
#define PB_PV_BOOL		0x20	/* bool_value 4 */
#define HP_STATUS_SUCCESS	1
#define HP_STATUS_FAILURE	2

/* TensorProto{dtype: DT_FLOAT, tensor_shape{dim{size: 0}}}, as serialized */
static const unsigned char null_tensor[] = { 0x08, 0x01, 0x12, 0x02, 0x12, 0x00 };

static void pb_varint(struct buf *b, uint64_t v)
{
	unsigned char t[10];

	buf_put(b, t, (size_t)(put_varint(t, v) - t));
}

static void pb_bytes(struct buf *b, int key, const void *p, size_t n)
{
	buf_putc(b, (char)key);
	pb_varint(b, n);
	buf_put(b, p, n);
}

static void pb_double(struct buf *b, int key, double v)
{
	unsigned char t[8];

	buf_putc(b, (char)key);
	put_double(t, v);
	buf_put(b, t, 8);
}

/* One map entry of SessionStartInfo.hparams. */
static int hp_entry(struct buf *ssi, const struct hparam *hp)
{
	struct buf v = { 0 }, e = { 0 };
	int err;

	switch (hp->kind) {
	case HP_NULL:
		buf_putc(&v, PB_PV_NULL);
		buf_putc(&v, 0);
		break;
	case HP_NUMBER:
		pb_double(&v, PB_PV_NUMBER, hp->num);
		break;
	case HP_STRING:
		pb_bytes(&v, PB_PV_STRING, hp->str, hp->slen);
		break;
	case HP_BOOL:
		buf_putc(&v, PB_PV_BOOL);
		buf_putc(&v, hp->b ? 1 : 0);
		break;
	}
	pb_bytes(&e, PB_ENTRY_KEY, hp->key, hp->klen);
	pb_bytes(&e, PB_ENTRY_VALUE, v.p, v.len);
	pb_bytes(ssi, PB_START_HPARAMS, e.p, e.len);
	err = v.oom || e.oom || ssi->oom ? -ENOMEM : 0;
	buf_free(&v);
	buf_free(&e);
	return err;
}

/* Event{wall_time, summary{value{tag, metadata{plugin_data{"hparams",
 * @content}}, tensor}}} as one record. */
static int tfevents_put_plugin(struct sink *s, const char *tag, const struct buf *content)
{
	struct buf pd = { 0 }, md = { 0 }, val = { 0 }, sum = { 0 }, ev = { 0 };
	int err;

	pb_bytes(&pd, PB_PLUGIN_NAME, HP_PLUGIN, strlen(HP_PLUGIN));
	pb_bytes(&pd, PB_PLUGIN_CONTENT, content->p, content->len);
	pb_bytes(&md, PB_META_PLUGIN_DATA, pd.p, pd.len);
	pb_bytes(&val, PB_VALUE_TAG, tag, strlen(tag));
	pb_bytes(&val, PB_VALUE_TENSOR, null_tensor, sizeof(null_tensor));
	pb_bytes(&val, PB_VALUE_METADATA, md.p, md.len);
	pb_bytes(&sum, PB_SUMMARY_VALUE, val.p, val.len);
	pb_double(&ev, PB_EVENT_WALL_TIME, now_s());
	pb_bytes(&ev, PB_EVENT_SUMMARY, sum.p, sum.len);
	err = content->oom || pd.oom || md.oom || val.oom || sum.oom || ev.oom ? -ENOMEM :
	      buf_reserve(&s->out, TFEV_HDR + ev.len + TFEV_FTR);
	if (!err) {
		memcpy(s->out.p + s->out.len + TFEV_HDR, ev.p, ev.len);
		record_seal(s, ev.len);
	}
	buf_free(&pd);
	buf_free(&md);
	buf_free(&val);
	buf_free(&sum);
	buf_free(&ev);
	if (err)
		return err;
	return s->out.len > TFEV_FLUSH_AT ? flush(s) : 0;
}

static int tfevents_hparams(struct sink *s, const struct hparams *hp)
{
	struct buf ssi = { 0 }, c = { 0 };
	int err = 0;

	for (int i = 0; i < hp->nflat && !err; i++)
		err = hp_entry(&ssi, &hp->flat[i]);
	if (!err) {
		pb_double(&ssi, PB_START_TIME, hp->start_time);
		pb_bytes(&c, PB_HP_START, ssi.p, ssi.len);
		err = tfevents_put_plugin(s, HP_START_TAG, &c);
	}
	buf_free(&ssi);
	buf_free(&c);
	return err;
}

static int tfevents_hparams_end(struct sink *s, bool success, double end_time)
{
	struct buf sei = { 0 }, c = { 0 };
	int err;

	buf_putc(&sei, PB_END_STATUS);
	buf_putc(&sei, success ? HP_STATUS_SUCCESS : HP_STATUS_FAILURE);
	pb_double(&sei, PB_END_TIME, end_time);
	pb_bytes(&c, PB_HP_END, sei.p, sei.len);
	err = sei.oom ? -ENOMEM : tfevents_put_plugin(s, HP_END_TAG, &c);
	buf_free(&sei);
	buf_free(&c);
	return err;
}

/* ---- file I/O ---- */

/*
 * Forget everything since the last commit, on disk and in memory.  If
 * even ftruncate fails, the stale tail is harmless as long as we retry
 * the truncate before the next write: pwrite goes to s->flushed anyway.
 */
static void rollback(struct sink *s)
{
	s->out.len = 0;
	s->flushed = s->committed;
	s->trunc_pending = ftruncate(s->fd, (off_t)s->committed) != 0;
}

static int flush(struct sink *s)
{
	int err;

	if (s->trunc_pending) {
		if (ftruncate(s->fd, (off_t)s->committed))
			return -errno;
		s->trunc_pending = false;
	}
	if (!s->out.len)
		return 0;
	err = pwrite_all(s->fd, s->out.p, s->out.len, s->flushed);
	if (err) {
		rollback(s);
		return err;
	}
	s->flushed += s->out.len;
	s->out.len = 0;
	return 0;
}

static int set_path(struct sink *s, const char *dir, const char *base)
{
	size_t dl = strlen(dir), bl = strlen(base);

	while (dl > 1 && dir[dl - 1] == '/')
		dl--;
	if (dl + 1 + bl >= PATH_MAX)
		return -ENAMETOOLONG;
	s->path = malloc(dl + 1 + bl + 1);
	if (!s->path)
		return -ENOMEM;
	memcpy(s->path, dir, dl);
	s->path[dl] = '/';
	memcpy(s->path + dl + 1, base, bl + 1);
	s->base = s->path + dl + 1;
	return 0;
}

/*
 * events.out.tfevents.<epoch s, 10 digits>.<host>.<pid>.mring: the
 * TensorBoard writer's pattern.  TensorBoard reads a directory's files
 * in name order and follows only the newest, which the zero-padded
 * timestamp makes the last.
 */
static void make_basename(char *out, size_t size)
{
	char host[256];

	if (gethostname(host, sizeof(host)))
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	/*
	 * sethostname() takes any bytes; the name goes into a path and into
	 * the drain state as one line, so no '/' and no control character.
	 */
	for (unsigned char *c = (unsigned char *)host; *c; c++)
		if (*c == '/' || *c < 0x20 || *c == 0x7f)
			*c = '_';
	snprintf(out, size, TFEV_PREFIX "%010ld.%s.%d" TFEV_SUFFIX,
		 (long)time(NULL), host, (int)getpid());
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool name_ours(const char *name)
{
	size_t n = strlen(name), sl = strlen(TFEV_SUFFIX);

	return !strncmp(name, TFEV_PREFIX, strlen(TFEV_PREFIX)) && n > sl &&
	       !strcmp(name + n - sl, TFEV_SUFFIX);
}

/* Is @rec, TFEV_VERSION_REC bytes, byte for byte a version record we write? */
static bool is_version_record(const unsigned char *rec)
{
	struct sink v = { .fd = -1 };
	uint64_t bits = 0;
	double wall;
	bool same;

	/* its wall time is the one thing that varies */
	for (int i = 0; i < 8; i++)
		bits |= (uint64_t)rec[TFEV_HDR + 1 + i] << (8 * i);
	memcpy(&wall, &bits, sizeof(wall));
	same = !tfevents_put_version(&v, wall) && !memcmp(v.out.p, rec, TFEV_VERSION_REC);
	buf_free(&v.out);
	return same;
}

/*
 * Do the first @size bytes of @fd hold whole records, the first our
 * version record?  A resume appends at @size, so a state that points
 * into a record (damaged, or the file changed since) would leave a file
 * TensorBoard stops reading at that point.  Walks the length fields and
 * their CRCs: one read of the committed part, not of each event's data.
 * Returns 0, -EBADMSG, or a read error.
 */
static int records_end_at(int fd, uint64_t size)
{
	const size_t cap = 1 << 20;
	unsigned char *buf;
	uint64_t base = 0, have = 0, off = TFEV_VERSION_REC;
	int err = 0;

	if (size < TFEV_VERSION_REC)
		return -EBADMSG;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	have = (uint64_t)pread(fd, buf, TFEV_VERSION_REC, 0);
	if (have != TFEV_VERSION_REC || !is_version_record(buf))
		err = have == (uint64_t)-1 ? -errno : -EBADMSG;
	while (!err && off < size) {
		const unsigned char *h;
		uint64_t len = 0;
		uint32_t crc = 0;
		ssize_t n;

		if (size - off < TFEV_HDR + TFEV_FTR) {
			err = -EBADMSG;
			break;
		}
		if (off < base || off + TFEV_HDR > base + have) {
			n = pread(fd, buf, (size_t)(size - off < cap ? size - off : cap),
				  (off_t)off);
			if (n < TFEV_HDR) {
				err = n < 0 ? -errno : -EBADMSG;
				break;
			}
			base = off;
			have = (uint64_t)n;
		}
		h = buf + (off - base);
		for (int i = 0; i < 8; i++)
			len |= (uint64_t)h[i] << (8 * i);
		for (int i = 0; i < 4; i++)
			crc |= (uint32_t)h[8 + i] << (8 * i);
		if (tfevents_mask(tfevents_crc32c(h, 8)) != crc ||
		    len > size - off - TFEV_HDR - TFEV_FTR)
			err = -EBADMSG;
		off += TFEV_HDR + len + TFEV_FTR;
	}
	free(buf);
	return err;
}

/*
 * Remove @name in @dfd if it is a leftover (see the top of this file):
 * empty (killed before its first byte) or just the version record.
 */
static void remove_if_leftover(int dfd, const char *name)
{
	unsigned char rec[TFEV_VERSION_REC + 1];
	struct stat sb, now;
	int fd;

	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return;
	/* a file with events is never even locked: it may be about to resume */
	if (fstat(fd, &sb) || (sb.st_size != 0 && sb.st_size != TFEV_VERSION_REC))
		goto out;
	/* no lock, or no locking at all: maybe live, leave it */
	if (flock(fd, LOCK_EX | LOCK_NB))
		goto out;
	if (fstat(fd, &sb) || !S_ISREG(sb.st_mode) || sb.st_uid != geteuid())
		goto out;
	if (sb.st_size != 0 &&
	    (sb.st_size != TFEV_VERSION_REC ||
	     pread(fd, rec, sizeof(rec), 0) != TFEV_VERSION_REC || !is_version_record(rec)))
		goto out;
	/* and the name still is this file */
	if (fstatat(dfd, name, &now, AT_SYMLINK_NOFOLLOW) ||
	    now.st_dev != sb.st_dev || now.st_ino != sb.st_ino)
		goto out;
	unlinkat(dfd, name, 0);
out:
	close(fd);		/* unlocks */
}

static void remove_leftovers(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;		/* creating the file will say why */
	while ((e = readdir(d)))
		if (name_ours(e->d_name))
			remove_if_leftover(dirfd(d), e->d_name);
	closedir(d);
}

/*
 * Create the file and lock it.  Between the two, another drain's scan
 * may take the empty file for a leftover and remove it; the name is then
 * free again and we create it anew.  Once locked, no scan touches it.
 */
static int create_locked(struct sink *s)
{
	struct stat sb;

	for (int tries = 0; tries < 100; tries++) {
		s->fd = open(s->path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW,
			     0644);
		if (s->fd < 0)
			return -errno;
		/* blocking: a scan of another drain may hold it for a moment */
		while (flock(s->fd, LOCK_EX) && errno == EINTR)
			;
		if (fstat(s->fd, &sb))
			return -errno;
		if (sb.st_nlink > 0)
			return 0;
		close(s->fd);
		s->fd = -1;
	}
	return -EAGAIN;
}

static int open_fresh(struct sink *s, const char *dir)
{
	char base[512];
	int err;

	remove_leftovers(dir);
	make_basename(base, sizeof(base));
	err = set_path(s, dir, base);
	if (err)
		return err;
	/*
	 * Locked before its first byte, so no one takes it for a leftover
	 * once it holds one.  Without locks in the file system there is
	 * nothing to take.
	 */
	err = create_locked(s);
	if (err)
		return err;
	/* The version record goes out now, so the file is never empty. */
	err = tfevents_put_version(s, now_s());
	if (!err)
		err = flush(s);
	if (!err && fsync(s->fd))
		err = -errno;
	if (!err)
		err = fsync_dir(dir);
	if (err) {
		unlink(s->path);
		return err;
	}
	s->committed = s->flushed;
	return 0;
}

/* The state's basename must name a file directly inside the directory. */
static bool base_ok(const char *b)
{
	return b[0] && b[0] != '.' && !strchr(b, '/') && strstr(b, "tfevents");
}

/*
 * Lock a file to resume.  Another drain's leftover scan holds the lock of
 * a version-only file for a moment, so -EBUSY only after that moment has
 * passed a few times: then a live drain has it.
 */
static int lock_committed(int fd)
{
	const struct timespec pause = { .tv_nsec = 10 * 1000 * 1000 };
	int err;

	for (int tries = 0; tries < 20; tries++) {
		err = lock_output(fd);
		if (err != -EBUSY)
			return err;
		nanosleep(&pause, NULL);
	}
	return err;
}

static int open_committed(struct sink *s, const char *dir, const struct sink_state *st)
{
	struct stat sb;
	int err;

	if (!st->extra || !base_ok(st->extra))
		return -EINVAL;
	err = set_path(s, dir, st->extra);
	if (err)
		return err;
	/* O_NONBLOCK: a FIFO planted there must not hang the open */
	s->fd = open(s->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (s->fd < 0)
		return -errno;
	if (fstat(s->fd, &sb))
		return -errno;
	if (!S_ISREG(sb.st_mode))
		return -EINVAL;
	err = lock_committed(s->fd);
	if (err)
		return err;
	/* removed as a leftover between our open and our lock */
	if (fstat(s->fd, &sb))
		return -errno;
	if (sb.st_nlink == 0)
		return -ENOENT;
	if ((uint64_t)sb.st_size < st->size)
		return -EIO;	/* committed events are gone: don't paper over it */
	err = records_end_at(s->fd, st->size);
	if (err)
		return err;
	/* drop what a killed drainer wrote after its last commit */
	if ((uint64_t)sb.st_size > st->size && ftruncate(s->fd, (off_t)st->size))
		return -errno;
	s->committed = s->flushed = st->size;
	return 0;
}

static int open_resume(struct sink *s, const char *dir, const struct sink_state *st)
{
	int err = open_committed(s, dir, st);

	if (err != -ENOENT || st->size != TFEV_VERSION_REC)
		return err;
	/*
	 * Nothing but the version record was committed, and the file is
	 * gone (a fresh drain took it for a leftover): a new file loses
	 * nothing, and the next commit records its name.
	 */
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	free(s->path);
	s->path = NULL;
	return open_fresh(s, dir);
}

/* ---- sink_ops ---- */

static void tfevents_close(struct sink *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);	/* and so releases the lock */
	buf_free(&s->out);
	free(s->path);
	free(s);
}

static int tfevents_open(struct sink **out, const char *dir,
			 const struct sink_state *resume)
{
	struct sink *s;
	int err;

	*out = NULL;
	err = mkdir_p(dir);
	if (err)
		return err;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = -1;
	err = resume ? open_resume(s, dir, resume) : open_fresh(s, dir);
	if (err) {
		tfevents_close(s);
		return err;
	}
	*out = s;
	return 0;
}

static int tfevents_write(struct sink *s, const struct row *r)
{
	double wall = (double)r->wall_ns / 1e9;
	int err;

	switch (r->kind) {
	case ROW_STEP:
	case ROW_EPOCH:
		err = tfevents_put_scalars(s, wall, r->step, r->rank, r->n,
					   r->keys, r->vals);
		break;
	case ROW_LOST: {
		static const char *const lost_key[] = { TFEV_LOST_TAG };
		double lost = (double)r->lost;

		err = tfevents_put_scalars(s, wall, r->step, r->rank, 1,
					   lost_key, &lost);
		break;
	}
	default:
		return -EINVAL;
	}
	if (err)
		return err;
	return s->out.len > TFEV_FLUSH_AT ? flush(s) : 0;
}

static int tfevents_commit(struct sink *s, struct sink_state *st)
{
	int err = flush(s);

	if (err)
		return err;
	err = sink_state_set_extra(st, s->base);
	if (err) {
		rollback(s);	/* out of memory commits nothing */
		return err;
	}
	s->committed = s->flushed;
	st->size = s->committed;
	return 0;
}

static int tfevents_sync(struct sink *s)
{
	int err;

	if (fsync(s->fd) == 0)
		return 0;
	/* after a failed fsync the page cache can't be trusted */
	err = -errno;
	rollback(s);
	return err;
}

static const char *tfevents_path(struct sink *s)
{
	return s->path;
}

const struct sink_ops sink_tfevents_ops = {
	.name	= "tensorboard",
	.open	= tfevents_open,
	.write	= tfevents_write,
	.commit	= tfevents_commit,
	.sync	= tfevents_sync,
	.path	= tfevents_path,
	.close	= tfevents_close,
	.hparams = tfevents_hparams,
	.hparams_end = tfevents_hparams_end,
};
