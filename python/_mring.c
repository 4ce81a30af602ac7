// SPDX-License-Identifier: MIT
/*
 * _mring.c - CPython binding of mring (the C extension behind the `mring`
 * package).  Built by setup.py together with the library sources in src/,
 * so no installed libmring is needed.
 *
 * Hot path: Metric.log is METH_FASTCALL; an exact float goes straight to
 * the inline mring_log() with no allocation and no argument parsing.
 *
 * Error policy (docs/python.md):
 *  - -ENOBUFS (ring full, record dropped) is NOT an error: the drop is
 *    counted by the library and shows up in readers as a "lost" event and
 *    in status()["dropped"].  Logging never raises because the ring is full.
 *  - -EINVAL (and bad names/flags) -> ValueError
 *  - -EPERM (writer used in a forked child) -> RuntimeError
 *  - anything else -> OSError(errno, message) (FileExistsError etc.)
 *  - using a closed Writer/Reader -> ValueError
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mring.h"

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

enum { CTX_OPEN, CTX_METRIC, CTX_WRITE, CTX_READ };

/*
 * -ENOENT or -EEXIST (@e) from opening @name: which of its causes, as the
 * library tells them apart (with Python's spelling of MRING_CFG_REPLACE).
 */
static const char *open_error_text(int e, PyObject *name, char *buf, size_t len)
{
	PyObject *b = NULL;
	const char *text;

	if (!name || !PyUnicode_FSConverter(name, &b)) {
		PyErr_Clear();
		return e == EEXIST ? "a file is there: a segment whose producer is gone "
				     "(replace=True replaces it) or a file that is not a "
				     "segment (never replaced)" : "no such segment";
	}
	if (e == EEXIST)
		text = __mring_eexist_text(PyBytes_AS_STRING(b), "replace=True", buf, len);
	else
		text = __mring_enoent_text(PyBytes_AS_STRING(b), buf, len);
	Py_DECREF(b);
	return text;
}

static PyObject *set_error(int rc, int ctx, const char *what, PyObject *filename)
{
	int e = rc < 0 ? -rc : rc;
	const char *msg = mring_strerror(-e);
	char buf[4400];
	PyObject *exc;

	if (e == ENOENT && (ctx == CTX_OPEN || ctx == CTX_READ))
		msg = open_error_text(ENOENT, filename, buf, sizeof(buf));
	if (e == EEXIST && ctx == CTX_OPEN)
		msg = open_error_text(EEXIST, filename, buf, sizeof(buf));

	if (e == EINVAL || (ctx == CTX_METRIC && (e == ENAMETOOLONG ||
		       e == EEXIST || e == ENOSPC)) || e == ERANGE) {
		PyErr_Format(PyExc_ValueError, "%s: %s", what, msg);
		return NULL;
	}
	if (e == EPERM && ctx != CTX_OPEN && ctx != CTX_READ) {
		PyErr_Format(PyExc_RuntimeError, "%s: %s", what, msg);
		return NULL;
	}
	/* OSError(errno, strerror[, filename]) picks the subclass itself */
	if (filename)
		exc = PyObject_CallFunction(PyExc_OSError, "isO", e, msg, filename);
	else
		exc = PyObject_CallFunction(PyExc_OSError, "is", e, msg);
	if (exc) {
		PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
		Py_DECREF(exc);
	}
	return NULL;
}

/* float(o) without allocating for float and int. */
static inline double as_double(PyObject *o)
{
	if (likely(PyFloat_CheckExact(o)))
		return PyFloat_AS_DOUBLE(o);
	if (PyLong_CheckExact(o))
		return PyLong_AsDouble(o);
	if (PyUnicode_Check(o) || PyBytes_Check(o) || o == Py_None) {
		PyErr_Format(PyExc_TypeError,
			     "mring: a metric value must be a real number, not %.100s",
			     Py_TYPE(o)->tp_name);
		return -1.0;
	}
	return PyFloat_AsDouble(o);	/* __float__, then __index__ */
}

/* A metric or run name as UTF-8 without NUL; NULL with an exception. */
static const char *as_name(PyObject *o, const char *what)
{
	Py_ssize_t n;
	const char *s;

	if (!PyUnicode_Check(o)) {
		PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s", what,
			     Py_TYPE(o)->tp_name);
		return NULL;
	}
	s = PyUnicode_AsUTF8AndSize(o, &n);
	if (!s)
		return NULL;
	if ((size_t)n != strlen(s)) {
		PyErr_Format(PyExc_ValueError, "%s contains a NUL character", what);
		return NULL;
	}
	return s;
}

/* ------------------------------------------------------------------ */
/* Writer and Metric                                                   */
/* ------------------------------------------------------------------ */

typedef struct {
	PyObject_HEAD
	struct mring_writer *w;	/* NULL once closed */
	PyObject *names;	/* dict: name -> Metric */
	PyObject *path;
	PyObject *run;
	int on_full;
	int rank;
	int busy;		/* inside a GIL-free wait (on_full="wait") */
	int has_step;		/* log(step=) seen a step */
	unsigned long long last_step;
	unsigned long long capacity;
	/*
	 * Values still on a device (mring/_device.py): the harvester, made
	 * when the first device tensor is logged; while it holds work
	 * (deferred), every step, value and epoch end goes through it, so
	 * that the ring gets them in the order they were logged.
	 */
	PyObject *harvest;
	int deferred;
	unsigned int max_pending;
} WriterObject;

typedef struct {
	PyObject_HEAD
	WriterObject *writer;	/* strong: a Metric keeps its Writer alive */
	struct mring_writer *wcache_unused;
	int id;
	unsigned flags;
	PyObject *name;
} MetricObject;

static PyTypeObject WriterType;
static PyTypeObject MetricType;

static const char *const on_full_names[] = {"drop", "overwrite", "wait"};

/* ---- values still on a device: routed to mring/_device.py ---------- */

static PyObject *tensor_type;	/* torch.Tensor, once torch was imported */
static PyObject *str_torch, *str_is_cpu, *str_item;
static int route_all;		/* tests: every tensor is a device tensor */
/*
 * torch.Tensor.is_cpu's C getter: called directly for an exact
 * torch.Tensor, it saves the attribute lookup (a third of the CPU-tensor
 * path's cost over m.log(t.item()), bench/gpu_log.py).  A subclass, which
 * may override is_cpu, goes through getattr.
 */
static getter is_cpu_get;
static void *is_cpu_closure;
static PyObject *tensor_item;	/* torch.Tensor.item, for the same reason */

/* 1: torch.Tensor is known; 0: torch is not imported (no tensor exists) */
static int find_tensor_type(void)
{
	static Py_ssize_t modules_seen = -1;	/* sys.modules' size without torch */
	PyObject *torch, *modules;

	if (likely(tensor_type != NULL))
		return 1;
	/* importing torch adds dozens of modules: same size, still no torch */
	modules = PyImport_GetModuleDict();
	if (PyDict_Check(modules) && PyDict_GET_SIZE(modules) == modules_seen)
		return 0;
	torch = PyImport_GetModule(str_torch);
	if (!torch) {
		if (PyErr_Occurred())
			return -1;
		modules_seen = PyDict_Check(modules) ? PyDict_GET_SIZE(modules) : -1;
		return 0;
	}
	tensor_type = PyObject_GetAttrString(torch, "Tensor");
	Py_DECREF(torch);
	if (tensor_type && !PyType_Check(tensor_type)) {
		Py_CLEAR(tensor_type);
		PyErr_SetString(PyExc_TypeError, "torch.Tensor is not a type");
	}
	if (tensor_type) {
		PyObject *d = _PyType_Lookup((PyTypeObject *)tensor_type, str_is_cpu);

		if (d && Py_IS_TYPE(d, &PyGetSetDescr_Type)) {
			is_cpu_get = ((PyGetSetDescrObject *)d)->d_getset->get;
			is_cpu_closure = ((PyGetSetDescrObject *)d)->d_getset->closure;
		}
		d = _PyType_Lookup((PyTypeObject *)tensor_type, str_item);
		if (d && Py_IS_TYPE(d, &PyMethodDescr_Type))
			tensor_item = Py_NewRef(d);
	}
	return tensor_type ? 1 : -1;
}

/*
 * 1: a torch tensor on a device (reading it now would wait for the
 * device); 0: anything else, a CPU tensor included (float() reads it at
 * once); -1: an exception.
 */
static int on_device(PyObject *o)
{
	PyObject *cpu;
	int r;

	if (PyFloat_CheckExact(o) || PyLong_CheckExact(o))
		return 0;
	r = find_tensor_type();
	if (r <= 0 || !PyObject_TypeCheck(o, (PyTypeObject *)tensor_type))
		return r < 0 ? -1 : 0;
	if (route_all)
		return 1;
	if (Py_IS_TYPE(o, (PyTypeObject *)tensor_type) && is_cpu_get) {
		cpu = is_cpu_get(o, is_cpu_closure);
		if (likely(cpu == Py_True || cpu == Py_False)) {
			Py_DECREF(cpu);
			return cpu == Py_False;
		}
	} else {
		cpu = PyObject_GetAttr(o, str_is_cpu);
	}
	if (!cpu)
		return -1;
	r = PyObject_IsTrue(cpu);
	Py_DECREF(cpu);
	return r < 0 ? -1 : !r;
}

/*
 * float(@o) for an exact torch.Tensor on the CPU through Tensor.item
 * (the method called directly: no slot dispatch); else as_double().
 */
static double tensor_or_number(PyObject *o)
{
	PyObject *r;
	double v;

	if (!tensor_item || !Py_IS_TYPE(o, (PyTypeObject *)tensor_type))
		return as_double(o);
	r = PyObject_Vectorcall(tensor_item, &o, 1, NULL);
	if (!r)
		return -1.0;
	v = as_double(r);
	Py_DECREF(r);
	return v;
}

/* The writer's harvester (mring._device.Harvest), made on first use. */
static PyObject *harvest_get(WriterObject *self)
{
	PyObject *mod, *cls;

	if (self->harvest)
		return self->harvest;
	mod = PyImport_ImportModule("mring._device");
	if (!mod)
		return NULL;
	cls = PyObject_GetAttrString(mod, "Harvest");
	Py_DECREF(mod);
	if (!cls)
		return NULL;
	self->harvest = PyObject_CallNoArgs(cls);
	Py_DECREF(cls);
	return self->harvest;
}

/*
 * harvest.log(id, value, weight): @value a device tensor, or, while the
 * harvester holds work, a float that must wait its turn.  Steals nothing.
 */
static PyObject *harvest_log(WriterObject *wr, int id, PyObject *value, double wt, int weighted)
{
	PyObject *h = harvest_get(wr);

	if (!h)
		return NULL;
	if (weighted)
		return PyObject_CallMethod(h, "log", "OiOd", (PyObject *)wr, id, value, wt);
	return PyObject_CallMethod(h, "log", "OiOO", (PyObject *)wr, id, value, Py_None);
}

/* Same, for a value already converted. */
static PyObject *harvest_log_double(WriterObject *wr, int id, double v, double wt, int weighted)
{
	PyObject *f = PyFloat_FromDouble(v), *r;

	if (!f)
		return NULL;
	r = harvest_log(wr, id, f, wt, weighted);
	Py_DECREF(f);
	return r;
}

/* Everything the harvester holds into the ring (waits for the device). */
static int harvest_flush(WriterObject *self)
{
	PyObject *r;

	if (!self->harvest)
		return 0;
	r = PyObject_CallMethod(self->harvest, "flush", "O", (PyObject *)self);
	Py_XDECREF(r);
	return r ? 0 : -1;
}

static PyObject *closed_error(const char *what)
{
	PyErr_Format(PyExc_ValueError, "%s on a closed mring.Writer", what);
	return NULL;
}

static int writer_usable(WriterObject *self, const char *what)
{
	if (unlikely(!self->w || !self->names)) {
		closed_error(what);
		return 0;
	}
	if (unlikely(self->busy)) {
		PyErr_Format(PyExc_RuntimeError,
			     "%s: mring.Writer is in use by another thread", what);
		return 0;
	}
	return 1;
}

/*
 * The rule a metric or run name @s breaks, for a ValueError that says so;
 * NULL when it keeps them all (mring_metric() and mring_writer_open()
 * check the same rules, and UTF-8 well-formedness, which str gives us).
 */
static const char *name_rule_broken(const char *s, char *buf, size_t len)
{
	size_t n = strlen(s);

	if (!n)
		return "must not be empty";
	if (n > MRING_NAME_MAX) {
		snprintf(buf, len, "is %zu bytes in UTF-8; at most %d", n, MRING_NAME_MAX);
		return buf;
	}
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c < 0x20 || *c == 0x7f) {
			snprintf(buf, len, "contains the control character U+%04X", *c);
			return buf;
		}
	}
	return NULL;
}

/* Say which argument of Writer() is out of range, and the range. */
static int config_error(const struct mring_config *c, unsigned long long capacity)
{
	char buf[96];
	const char *why;

	if (capacity && (capacity < MRING_MIN_CAPACITY || capacity > MRING_MAX_CAPACITY ||
			 (capacity & (capacity - 1)))) {
		PyErr_Format(PyExc_ValueError, "mring.Writer: capacity must be a power of two "
			     "from %u to 2**32 ring slots (got %llu); 0 means 2**20",
			     MRING_MIN_CAPACITY, capacity);
		return -1;
	}
	if (c->max_metrics > MRING_MAX_METRICS) {
		PyErr_Format(PyExc_ValueError, "mring.Writer: max_metrics must be at most %u "
			     "(got %u); 0 means %u", MRING_MAX_METRICS, c->max_metrics,
			     MRING_DEFAULT_MAX_METRICS);
		return -1;
	}
	if (c->mode & ~0777u) {
		PyErr_Format(PyExc_ValueError, "mring.Writer: mode must be permission bits "
			     "within 0o777 (got 0o%o)", c->mode);
		return -1;
	}
	if (c->run && (why = name_rule_broken(c->run, buf, sizeof(buf)))) {
		PyErr_Format(PyExc_ValueError, "mring.Writer: run name %s", why);
		return -1;
	}
	return 0;
}

static int Writer_init(WriterObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"path", "capacity", "on_full", "run", "rank",
				 "max_metrics", "mode", "replace", "max_pending", NULL};
	PyObject *path = NULL, *bpath = NULL, *run = Py_None;
	unsigned long long capacity = 0;
	const char *on_full = "drop";
	int rank = 0, replace = 0, rc, i;
	unsigned int max_metrics = 0, mode = 0;
	int max_pending = 8;
	struct mring_config cfg;
	struct mring_writer *w = NULL;

	if (self->w) {
		PyErr_SetString(PyExc_RuntimeError, "mring.Writer already open");
		return -1;
	}
	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$KsOiIIpi", kwlist, &path,
					 &capacity, &on_full, &run, &rank,
					 &max_metrics, &mode, &replace, &max_pending))
		return -1;
	if (max_pending < 1 || max_pending > 1 << 20) {
		PyErr_Format(PyExc_ValueError, "max_pending must be in [1, 2**20], not %d",
			     max_pending);
		return -1;
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.on_full = -1;
	for (i = 0; i < 3; i++)
		if (!strcmp(on_full, on_full_names[i]))
			cfg.on_full = i;
	if (cfg.on_full < 0) {
		PyErr_Format(PyExc_ValueError,
			     "on_full must be 'drop', 'overwrite' or 'wait', not '%s'",
			     on_full);
		return -1;
	}
	if (run != Py_None) {
		cfg.run = as_name(run, "run");
		if (!cfg.run)
			return -1;
	}
	if (!PyUnicode_FSConverter(path, &bpath))
		return -1;
	cfg.capacity = capacity;
	cfg.max_metrics = max_metrics;
	cfg.rank = rank;
	cfg.mode = mode;
	cfg.flags = replace ? MRING_CFG_REPLACE : 0;
	if (config_error(&cfg, capacity) < 0) {
		Py_DECREF(bpath);
		return -1;
	}

	Py_BEGIN_ALLOW_THREADS
	rc = mring_writer_open(PyBytes_AS_STRING(bpath), &cfg, &w);
	Py_END_ALLOW_THREADS
	if (rc < 0) {
		set_error(rc, CTX_OPEN, "mring.Writer", path);
		Py_DECREF(bpath);
		return -1;
	}
	Py_DECREF(bpath);
	self->w = w;
	self->on_full = cfg.on_full;
	self->rank = rank;
	self->capacity = capacity ? capacity : MRING_DEFAULT_CAPACITY;
	self->max_pending = (unsigned int)max_pending;
	Py_XSETREF(self->names, PyDict_New());
	Py_INCREF(path);
	Py_XSETREF(self->path, path);
	Py_INCREF(run);
	Py_XSETREF(self->run, run);
	if (!self->names)
		return -1;
	return 0;
}

static int writer_close(WriterObject *self)
{
	int rc = 0;

	if (self->w) {
		rc = mring_writer_close(self->w);
		self->w = NULL;	/* released even on -EPERM */
	}
	return rc;
}

static int Writer_traverse(WriterObject *self, visitproc visit, void *arg)
{
	Py_VISIT(self->names);
	Py_VISIT(self->harvest);
	return 0;
}

static int Writer_clear(WriterObject *self)
{
	Py_CLEAR(self->names);
	Py_CLEAR(self->harvest);
	return 0;
}

/* A Writer dropped without close(): what waits for the device first. */
static void Writer_finalize(WriterObject *self)
{
	PyObject *t, *v, *tb;

	if (!self->w || !self->harvest || !self->deferred || self->busy)
		return;
	PyErr_Fetch(&t, &v, &tb);
	if (harvest_flush(self) < 0)
		PyErr_WriteUnraisable((PyObject *)self);
	PyErr_Restore(t, v, tb);
}

static void Writer_dealloc(WriterObject *self)
{
	if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
		return;		/* resurrected by the finalizer */
	PyObject_GC_UnTrack(self);
	if (!self->busy)
		(void)writer_close(self);
	Py_CLEAR(self->names);
	Py_CLEAR(self->harvest);
	Py_CLEAR(self->path);
	Py_CLEAR(self->run);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Writer_close(WriterObject *self, PyObject *unused)
{
	int rc;

	if (!self->w)
		Py_RETURN_NONE;	/* idempotent, like file.close() */
	if (self->busy) {
		PyErr_SetString(PyExc_RuntimeError,
				"close: mring.Writer is in use by another thread");
		return NULL;
	}
	/* what is still on the device first; closed even if that fails */
	if (harvest_flush(self) < 0) {
		(void)writer_close(self);
		return NULL;
	}
	rc = writer_close(self);
	if (rc < 0)
		return set_error(rc, CTX_WRITE, "close", NULL);
	Py_RETURN_NONE;
}

static PyObject *Writer_enter(WriterObject *self, PyObject *unused)
{
	if (!self->w)
		return closed_error("__enter__");
	Py_INCREF(self);
	return (PyObject *)self;
}

static PyObject *Writer_exit(WriterObject *self, PyObject *const *args,
			     Py_ssize_t nargs)
{
	PyObject *r = Writer_close(self, NULL);

	if (!r)
		return NULL;
	Py_DECREF(r);
	Py_RETURN_FALSE;
}

static int parse_reduce(PyObject *o, unsigned *out)
{
	const char *s;

	if (o == Py_None) {
		*out = MRING_MEAN;
		return 0;
	}
	if (!PyUnicode_Check(o)) {
		PyErr_Format(PyExc_TypeError, "reduce must be str, not %.100s",
			     Py_TYPE(o)->tp_name);
		return -1;
	}
	s = PyUnicode_AsUTF8(o);
	if (!s)
		return -1;
	if (!strcmp(s, "mean"))
		*out = MRING_MEAN;
	else if (!strcmp(s, "sum"))
		*out = MRING_SUM;
	else if (!strcmp(s, "min"))
		*out = MRING_MIN;
	else if (!strcmp(s, "max"))
		*out = MRING_MAX;
	else {
		PyErr_Format(PyExc_ValueError,
			     "reduce must be 'mean', 'sum', 'min' or 'max', not %R", o);
		return -1;
	}
	return 0;
}

/* Register (or find) a metric; new reference. */
static PyObject *writer_metric(WriterObject *self, PyObject *name, unsigned flags)
{
	MetricObject *m;
	const char *s;
	int id;

	m = (MetricObject *)PyDict_GetItemWithError(self->names, name);
	if (m) {
		if (m->flags == flags) {
			Py_INCREF(m);
			return (PyObject *)m;
		}
	} else if (PyErr_Occurred()) {
		return NULL;
	}
	s = as_name(name, "metric name");
	if (!s)
		return NULL;
	{
		char buf[96];
		const char *why = name_rule_broken(s, buf, sizeof(buf));

		if (why) {
			PyErr_Format(PyExc_ValueError, "metric name %R %s", name, why);
			return NULL;
		}
	}
	id = mring_metric(self->w, s, flags);
	if (id < 0) {
		if (id == -EEXIST)
			PyErr_Format(PyExc_ValueError,
				     "metric %R is already registered with other flags",
				     name);
		else
			set_error(id, CTX_METRIC, "metric", NULL);
		return NULL;
	}
	m = PyObject_GC_New(MetricObject, &MetricType);
	if (!m)
		return NULL;
	Py_INCREF(self);
	m->writer = self;
	m->wcache_unused = NULL;
	m->id = id;
	m->flags = flags;
	Py_INCREF(name);
	m->name = name;
	PyObject_GC_Track(m);
	if (PyDict_SetItem(self->names, name, (PyObject *)m) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return (PyObject *)m;
}

static PyObject *Writer_metric(WriterObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"name", "on_step", "on_epoch", "reduce",
				 "prog_bar", NULL};
	PyObject *name, *reduce = Py_None;
	int on_step = 1, on_epoch = 0, prog_bar = 0;
	unsigned flags = 0, red;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "U|$ppOp", kwlist, &name,
					 &on_step, &on_epoch, &reduce, &prog_bar))
		return NULL;
	if (parse_reduce(reduce, &red) < 0)
		return NULL;
	if (!on_step && !on_epoch) {
		PyErr_SetString(PyExc_ValueError,
				"a metric needs on_step=True or on_epoch=True");
		return NULL;
	}
	if (!on_epoch && reduce != Py_None && red != MRING_MEAN) {
		PyErr_SetString(PyExc_ValueError,
				"reduce= needs on_epoch=True");
		return NULL;
	}
	if (on_step)
		flags |= MRING_ON_STEP;
	if (on_epoch)
		flags |= MRING_ON_EPOCH | red;
	if (prog_bar)
		flags |= MRING_PROG_BAR;
	if (!writer_usable(self, "metric"))
		return NULL;
	return writer_metric(self, name, flags);
}

static int step_arg(PyObject *o, unsigned long long *out)
{
	unsigned long long v;
	PyObject *i;

	if (likely(PyLong_CheckExact(o))) {
		v = PyLong_AsUnsignedLongLong(o);
	} else {
		i = PyNumber_Index(o);
		if (!i)
			return -1;
		v = PyLong_AsUnsignedLongLong(i);
		Py_DECREF(i);
	}
	if (v == (unsigned long long)-1 && PyErr_Occurred()) {
		if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
			PyErr_Clear();
			PyErr_SetString(PyExc_ValueError,
					"step must be an int in [0, 2**64)");
		}
		return -1;
	}
	*out = v;
	return 0;
}

/* mring_step(): 0 or -ENOBUFS (the step is set either way), or -EPERM */
/*
 * mring_step() or mring_rewind() (@fn); in WAIT mode without the GIL, as
 * either may wait for the drainer.  Any result but -EPERM sets the step.
 */
static inline int step_call(WriterObject *self, int (*fn)(struct mring_writer *, uint64_t),
			    unsigned long long step)
{
	int rc;

	if (unlikely(self->on_full == MRING_FULL_WAIT)) {
		struct mring_writer *w = self->w;
		self->busy = 1;
		Py_BEGIN_ALLOW_THREADS
		rc = fn(w, step);
		Py_END_ALLOW_THREADS
		self->busy = 0;
	} else {
		rc = fn(self->w, step);
	}
	if (unlikely(rc == -EPERM || rc == -EINVAL))
		return rc;
	self->has_step = 1;
	self->last_step = step;
	return 0;
}

static inline int do_step(WriterObject *self, unsigned long long step)
{
	return step_call(self, mring_step, step);
}

/* A step while the harvester holds work: it waits its turn there. */
static PyObject *harvest_step(WriterObject *self, unsigned long long step)
{
	PyObject *r = PyObject_CallMethod(self->harvest, "step", "OK", (PyObject *)self, step);

	/* queued even when it raised (a failed copy of the step that ended) */
	self->has_step = 1;
	self->last_step = step;
	return r;
}

/* w.rewind(n): the run resumed from a checkpoint at step n */
static PyObject *Writer_rewind(WriterObject *self, PyObject *arg)
{
	unsigned long long step;
	int rc;

	if (!writer_usable(self, "rewind"))
		return NULL;
	if (step_arg(arg, &step) < 0)
		return NULL;
	if (harvest_flush(self) < 0)
		return NULL;
	rc = step_call(self, mring_rewind, step);
	if (rc < 0)
		return set_error(rc, CTX_WRITE, "rewind", NULL);
	Py_RETURN_NONE;
}

static PyObject *Writer_step(WriterObject *self, PyObject *arg)
{
	unsigned long long step;

	if (!writer_usable(self, "step"))
		return NULL;
	if (step_arg(arg, &step) < 0)
		return NULL;
	if (unlikely(self->deferred))
		return harvest_step(self, step);
	if (unlikely(do_step(self, step) < 0))
		return set_error(-EPERM, CTX_WRITE, "step", NULL);
	Py_RETURN_NONE;
}

/* A writer method without arguments that calls @fn, named @what. */
static PyObject *writer_call(WriterObject *self, const char *what,
			     int (*fn)(struct mring_writer *))
{
	int rc;

	if (!writer_usable(self, what))
		return NULL;
	rc = fn(self->w);
	if (rc < 0)
		return set_error(rc, CTX_WRITE, what, NULL);
	Py_RETURN_NONE;
}

/* epoch_end() and flush() first wait for what is still on the device */
static PyObject *Writer_epoch_end(WriterObject *self, PyObject *unused)
{
	if (self->harvest && writer_usable(self, "epoch_end") && harvest_flush(self) < 0)
		return NULL;
	return writer_call(self, "epoch_end", mring_epoch_end);
}

/* flush(wait=True): wait=False takes only the device values already here */
static PyObject *Writer_flush(WriterObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"wait", NULL};
	int wait = 1;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|$p", kwlist, &wait))
		return NULL;
	if (self->harvest && writer_usable(self, "flush")) {
		PyObject *r = PyObject_CallMethod(self->harvest, wait ? "flush" : "poll", "O",
						  (PyObject *)self);

		if (!r)
			return NULL;
		Py_DECREF(r);
	}
	return writer_call(self, "flush", mring_flush);
}

/* json.<fn>(arg, **kw) */
static PyObject *json_call(const char *fn, PyObject *arg, PyObject *kw)
{
	PyObject *json = PyImport_ImportModule("json"), *f, *r = NULL;

	if (!json)
		return NULL;
	f = PyObject_GetAttrString(json, fn);
	Py_DECREF(json);
	if (f) {
		PyObject *args = PyTuple_Pack(1, arg);

		if (args)
			r = PyObject_Call(f, args, kw);
		Py_XDECREF(args);
		Py_DECREF(f);
	}
	return r;
}

/*
 * w.hparams(obj): a dict (or anything json.dumps takes; values it cannot
 * encode become str(value), as Lightning's save_hparams_to_yaml does for
 * a Namespace's odd members), or a str holding one JSON object.
 */
static PyObject *Writer_hparams(WriterObject *self, PyObject *obj)
{
	PyObject *text, *kw;
	const char *utf8;
	int rc;

	if (!writer_usable(self, "hparams"))
		return NULL;
	if (PyUnicode_Check(obj)) {
		text = Py_NewRef(obj);
	} else {
		PyObject *str = (PyObject *)&PyUnicode_Type;

		kw = Py_BuildValue("{s:O,s:O,s:O}", "allow_nan", Py_False, "default", str,
				   "ensure_ascii", Py_False);
		if (!kw)
			return NULL;
		text = json_call("dumps", obj, kw);
		Py_DECREF(kw);
		if (!text)
			return NULL;	/* ValueError for NaN/Inf: JSON has none */
	}
	utf8 = PyUnicode_AsUTF8(text);
	if (!utf8) {
		Py_DECREF(text);
		return NULL;
	}
	rc = mring_set_hparams(self->w, utf8);
	Py_DECREF(text);
	if (rc == -E2BIG) {
		PyErr_Format(PyExc_ValueError, "hparams: %zd bytes of JSON; at most %d",
			     (Py_ssize_t)strlen(utf8), MRING_HPARAMS_MAX);
		return NULL;
	}
	if (rc == -EINVAL) {
		PyErr_SetString(PyExc_ValueError, "hparams: not one JSON object (a dict, or "
				"a str holding one)");
		return NULL;
	}
	if (rc < 0)
		return set_error(rc, CTX_WRITE, "hparams", NULL);
	Py_RETURN_NONE;
}

static inline int log_one(WriterObject *wr, int id, double v, double wt, int weighted)
{
	struct mring_writer *w = wr->w;
	int rc;

	if (unlikely(wr->on_full == MRING_FULL_WAIT)) {
		wr->busy = 1;
		Py_BEGIN_ALLOW_THREADS
		rc = weighted ? mring_log_weighted(w, id, v, wt) : mring_log(w, id, v);
		Py_END_ALLOW_THREADS
		wr->busy = 0;
		return rc;
	}
	return weighted ? mring_log_weighted(w, id, v, wt) : mring_log(w, id, v);
}

#define LOG_DEFAULT_FLAGS (MRING_ON_STEP | MRING_ON_EPOCH | MRING_MEAN)

/*
 * w.log({"loss": 0.5, "lr": 3e-4}, step=n): HF Trainer.log-style.  Every
 * value is converted before anything is logged (all or nothing); unknown
 * names are registered as on_step + on_epoch (mean).  step= calls step(n)
 * first unless n is already the current step.
 */
static PyObject *Writer_log(WriterObject *self, PyObject *const *args,
			    Py_ssize_t nargs, PyObject *kwnames)
{
	PyObject *metrics, *step_o = Py_None, *key, *val;
	double stackbuf[32], *vals = stackbuf;
	MetricObject *stackm[32], **ms = stackm;
	PyObject *stackd[32], **devs = stackd;	/* owned: device tensors */
	Py_ssize_t ndevs = 0;			/* entries of devs[] set */
	unsigned long long step = 0;
	Py_ssize_t n, pos = 0, i = 0, k;
	PyObject *ret = NULL;
	int rc;

	if (nargs < 1 || nargs > 2)
		goto usage;
	metrics = args[0];
	if (nargs == 2)
		step_o = args[1];
	if (kwnames) {
		for (k = 0; k < PyTuple_GET_SIZE(kwnames); k++) {
			if (nargs == 2 || !PyUnicode_Check(PyTuple_GET_ITEM(kwnames, k)) ||
			    PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, k), "step") != 0)
				goto usage;
			step_o = args[nargs + k];
		}
	}
	if (!PyDict_Check(metrics)) {
		PyErr_Format(PyExc_TypeError, "log() takes a dict of metrics, not %.100s",
			     Py_TYPE(metrics)->tp_name);
		return NULL;
	}
	if (!writer_usable(self, "log"))
		return NULL;
	if (step_o != Py_None && step_arg(step_o, &step) < 0)
		return NULL;
	n = PyDict_GET_SIZE(metrics);
	if (n > 32) {
		vals = PyMem_Malloc(n * sizeof(*vals));
		ms = PyMem_Malloc(n * sizeof(*ms));
		devs = PyMem_Malloc(n * sizeof(*devs));
		if (!vals || !ms || !devs) {
			PyErr_NoMemory();
			goto out;
		}
	}
	/* pass 1: convert every value; nothing logged on error */
	while (PyDict_Next(metrics, &pos, &key, &val)) {
		if (i >= n)
			goto changed;	/* a value's __float__ grew the dict */
		if (PyDict_Check(val)) {
			PyErr_Format(PyExc_TypeError,
				     "log(): nested dictionaries cannot be logged (%R)", key);
			goto out;
		}
		rc = on_device(val);
		if (rc < 0)
			goto out;
		devs[i] = NULL;
		ndevs = i + 1;
		if (rc) {
			/* refused here, so that a bad one logs nothing */
			PyObject *h = harvest_get(self), *r;

			r = h ? PyObject_CallMethod(h, "check", "O", val) : NULL;
			if (!r)
				goto out;
			Py_DECREF(r);
			/* owned: user code (a later value's __float__) may
			 * replace it in the dict */
			devs[i] = Py_NewRef(val);
			vals[i++] = 0.0;	/* read when the device is done */
			continue;
		}
		vals[i] = tensor_or_number(val);
		if (vals[i] == -1.0 && PyErr_Occurred()) {
			PyObject *t, *v, *tb;
			PyErr_Fetch(&t, &v, &tb);
			PyErr_Format(PyExc_TypeError == t || PyExc_ValueError == t ? t :
				     PyExc_TypeError,
				     "log(): value of %R cannot be logged: %S", key,
				     v ? v : Py_None);
			Py_XDECREF(t);
			Py_XDECREF(v);
			Py_XDECREF(tb);
			goto out;
		}
		i++;
	}
	/* pass 2: names (registered on first use) */
	if (i != n || PyDict_GET_SIZE(metrics) != n)
		goto changed;
	pos = 0;
	i = 0;
	while (PyDict_Next(metrics, &pos, &key, &val)) {
		MetricObject *m;

		if (i >= n)
			goto changed;
		m = (MetricObject *)PyDict_GetItemWithError(self->names, key);
		if (!m) {
			if (PyErr_Occurred())
				goto out;
			m = (MetricObject *)writer_metric(self, key, LOG_DEFAULT_FLAGS);
			if (!m)
				goto out;
			Py_DECREF(m);	/* self->names holds it */
		}
		ms[i++] = m;
	}
	if (step_o != Py_None && !(self->has_step && self->last_step == step)) {
		if (unlikely(self->deferred)) {
			PyObject *r = harvest_step(self, step);

			if (!r)
				goto out;
			Py_DECREF(r);
		} else if (unlikely(do_step(self, step) < 0)) {
			set_error(-EPERM, CTX_WRITE, "log", NULL);
			goto out;
		}
	}
	for (k = 0; k < i; k++) {
		if (unlikely(devs[k] || self->deferred)) {
			PyObject *r = devs[k] ? harvest_log(self, ms[k]->id, devs[k], 1.0, 0) :
				      harvest_log_double(self, ms[k]->id, vals[k], 1.0, 0);

			if (!r)
				goto out;
			Py_DECREF(r);
			continue;
		}
		rc = log_one(self, ms[k]->id, vals[k], 1.0, 0);
		if (unlikely(rc < 0 && rc != -ENOBUFS)) {
			set_error(rc, CTX_WRITE, "log", NULL);
			goto out;
		}
	}
	Py_INCREF(Py_None);
	ret = Py_None;
out:
	for (k = 0; k < ndevs; k++)
		Py_XDECREF(devs[k]);
	if (vals != stackbuf)
		PyMem_Free(vals);
	if (ms != stackm)
		PyMem_Free(ms);
	if (devs != stackd)
		PyMem_Free(devs);
	return ret;
changed:
	PyErr_SetString(PyExc_RuntimeError, "log(): the dict changed size during the call");
	goto out;
usage:
	PyErr_SetString(PyExc_TypeError, "log(metrics, step=None)");
	return NULL;
}

static PyObject *Writer_get_closed(WriterObject *self, void *c)
{
	return PyBool_FromLong(self->w == NULL);
}

static PyObject *Writer_get_on_full(WriterObject *self, void *c)
{
	return PyUnicode_FromString(on_full_names[self->on_full]);
}

static PyObject *Writer_get_metrics(WriterObject *self, void *c)
{
	if (!self->names)
		return closed_error("metrics");
	return PyDictProxy_New(self->names);
}

static PyObject *Writer_get_step(WriterObject *self, void *c)
{
	if (!self->w)
		return closed_error("step");
	if (self->deferred)	/* the ring has not got it yet */
		return PyLong_FromUnsignedLongLong(self->last_step);
	return PyLong_FromUnsignedLongLong(mring_writer_step(self->w));
}

static PyObject *Writer_get_epoch(WriterObject *self, void *c)
{
	if (!self->w)
		return closed_error("epoch");
	return PyLong_FromUnsignedLong(mring_writer_epoch(self->w));
}

/* ---- for mring/_device.py: the ring itself, in the order it decided ---- */

/* w._raw_step(step, wall_ns): mring_step_at() */
static PyObject *Writer_raw_step(WriterObject *self, PyObject *const *args, Py_ssize_t n)
{
	unsigned long long step;
	long long wall;
	int rc;

	if (n != 2 || step_arg(args[0], &step) < 0)
		return n != 2 ? PyErr_Format(PyExc_TypeError, "_raw_step(step, wall_ns)") : NULL;
	wall = PyLong_AsLongLong(args[1]);
	if (wall == -1 && PyErr_Occurred())
		return NULL;
	if (!writer_usable(self, "step"))
		return NULL;
	if (self->on_full == MRING_FULL_WAIT) {
		struct mring_writer *w = self->w;

		self->busy = 1;
		Py_BEGIN_ALLOW_THREADS
		rc = mring_step_at(w, step, wall);
		Py_END_ALLOW_THREADS
		self->busy = 0;
	} else {
		rc = mring_step_at(self->w, step, wall);
	}
	if (rc == -EPERM || rc == -EINVAL)
		return set_error(rc, CTX_WRITE, "step", NULL);
	Py_RETURN_NONE;
}

/* w._raw_log(id, value, weight or None) */
static PyObject *Writer_raw_log(WriterObject *self, PyObject *const *args, Py_ssize_t n)
{
	int id, rc, weighted;
	double v, wt = 1.0;

	if (n != 3)
		return PyErr_Format(PyExc_TypeError, "_raw_log(id, value, weight)");
	id = (int)PyLong_AsLong(args[0]);
	if (id == -1 && PyErr_Occurred())
		return NULL;
	v = PyFloat_AsDouble(args[1]);
	if (v == -1.0 && PyErr_Occurred())
		return NULL;
	weighted = args[2] != Py_None;
	if (weighted) {
		wt = PyFloat_AsDouble(args[2]);
		if (wt == -1.0 && PyErr_Occurred())
			return NULL;
	}
	if (!writer_usable(self, "log"))
		return NULL;
	rc = log_one(self, id, v, wt, weighted);
	if (rc == 0 || rc == -ENOBUFS)
		Py_RETURN_NONE;
	return set_error(rc, CTX_WRITE, "log", NULL);
}

/* w._set_deferred(flag): the harvester holds work (True) or none */
static PyObject *Writer_set_deferred(WriterObject *self, PyObject *flag)
{
	int r = PyObject_IsTrue(flag);

	if (r < 0)
		return NULL;
	self->deferred = r;
	Py_RETURN_NONE;
}

/* w._drop(n): n values dropped before the ring, counted as a full ring
 * counts (DROP mode: True); False where the ring cannot count them */
static PyObject *Writer_drop(WriterObject *self, PyObject *arg)
{
	long n = PyLong_AsLong(arg);

	if (n == -1 && PyErr_Occurred())
		return NULL;
	if (!writer_usable(self, "_drop"))
		return NULL;
	if (n <= 0 || n > UINT_MAX)
		return PyErr_Format(PyExc_ValueError, "_drop(%ld)", n);
	return PyBool_FromLong(__mring_drop(self->w, (unsigned)n) == 0);
}

static PyObject *Writer_repr(WriterObject *self)
{
	return PyUnicode_FromFormat("<mring.Writer %R%s>", self->path ? self->path : Py_None,
				    self->w ? "" : " closed");
}

static PyMethodDef Writer_methods[] = {
	{"metric", (PyCFunction)(void (*)(void))Writer_metric,
	 METH_VARARGS | METH_KEYWORDS,
	 "metric(name, *, on_step=True, on_epoch=False, reduce='mean', prog_bar=False)"
	 " -> Metric"},
	{"step", (PyCFunction)Writer_step, METH_O,
	 "step(n): start step n (lower than the last: a rewind)"},
	{"rewind", (PyCFunction)Writer_rewind, METH_O,
	 "rewind(n): the run resumed from a checkpoint at step n; rows of steps >= n "
	 "logged before are void"},
	{"epoch_end", (PyCFunction)Writer_epoch_end, METH_NOARGS,
	 "epoch_end(): publish the epoch reductions and start the next epoch"},
	{"flush", (PyCFunction)(void (*)(void))Writer_flush, METH_VARARGS | METH_KEYWORDS,
	 "flush(): publish the live statistics now (step() does it too)"},
	{"log", (PyCFunction)(void (*)(void))Writer_log, METH_FASTCALL | METH_KEYWORDS,
	 "log(metrics: dict, step=None): log a dict of values (HF Trainer.log style)"},
	{"hparams", (PyCFunction)Writer_hparams, METH_O,
	 "hparams(dict or JSON str): store the run's hyperparameters (<= 64 KiB of JSON)"},
	{"close", (PyCFunction)Writer_close, METH_NOARGS, "close the run cleanly"},
	{"_raw_step", (PyCFunction)(void (*)(void))Writer_raw_step, METH_FASTCALL, NULL},
	{"_raw_log", (PyCFunction)(void (*)(void))Writer_raw_log, METH_FASTCALL, NULL},
	{"_set_deferred", (PyCFunction)Writer_set_deferred, METH_O, NULL},
	{"_drop", (PyCFunction)Writer_drop, METH_O, NULL},
	{"__enter__", (PyCFunction)Writer_enter, METH_NOARGS, NULL},
	{"__exit__", (PyCFunction)(void (*)(void))Writer_exit, METH_FASTCALL, NULL},
	{NULL}
};

static PyMemberDef Writer_members[] = {
	{"path", T_OBJECT, offsetof(WriterObject, path), READONLY, "segment path"},
	{"run", T_OBJECT, offsetof(WriterObject, run), READONLY, "run name"},
	{"rank", T_INT, offsetof(WriterObject, rank), READONLY, "rank"},
	{"max_pending", T_UINT, offsetof(WriterObject, max_pending), READONLY,
	 "steps whose device values may wait at once (docs/python.md)"},
	{"capacity", T_ULONGLONG, offsetof(WriterObject, capacity), READONLY,
	 "ring capacity (records)"},
	{NULL}
};

static PyGetSetDef Writer_getset[] = {
	{"closed", (getter)Writer_get_closed, NULL, "True once closed", NULL},
	{"on_full", (getter)Writer_get_on_full, NULL, "'drop', 'overwrite' or 'wait'", NULL},
	{"metrics", (getter)Writer_get_metrics, NULL, "name -> Metric (read-only)", NULL},
	{"current_step", (getter)Writer_get_step, NULL, "current step", NULL},
	{"current_epoch", (getter)Writer_get_epoch, NULL, "current epoch (from 0)", NULL},
	{NULL}
};

static PyTypeObject WriterType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "mring.Writer",
	.tp_basicsize = sizeof(WriterObject),
	.tp_dealloc = (destructor)Writer_dealloc,
	.tp_finalize = (destructor)Writer_finalize,
	.tp_repr = (reprfunc)Writer_repr,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
	.tp_traverse = (traverseproc)Writer_traverse,
	.tp_clear = (inquiry)Writer_clear,
	.tp_doc = "Writer(path, *, capacity=0, on_full='drop', run=None, rank=0,"
		  " max_metrics=0, mode=0, replace=False)\n\n"
		  "Create a segment and become its producer.",
	.tp_methods = Writer_methods,
	.tp_members = Writer_members,
	.tp_getset = Writer_getset,
	.tp_init = (initproc)Writer_init,
	.tp_new = PyType_GenericNew,
};

/* Metric ------------------------------------------------------------ */

static int Metric_traverse(MetricObject *self, visitproc visit, void *arg)
{
	Py_VISIT(self->writer);
	return 0;
}

static void Metric_dealloc(MetricObject *self)
{
	PyObject_GC_UnTrack(self);
	Py_CLEAR(self->writer);
	Py_CLEAR(self->name);
	PyObject_GC_Del(self);
}

static PyObject *metric_log_slow(MetricObject *self, PyObject *const *args,
				 Py_ssize_t nargs, PyObject *kwnames)
{
	PyObject *vo = NULL, *wo = NULL;
	Py_ssize_t k, nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	double v, wt = 1.0;
	int rc, dev;

	if (nargs > 2)
		goto usage;
	if (nargs >= 1)
		vo = args[0];
	if (nargs == 2)
		wo = args[1];
	for (k = 0; k < nk; k++) {
		PyObject *kn = PyTuple_GET_ITEM(kwnames, k);
		if (PyUnicode_CompareWithASCIIString(kn, "weight") == 0 && !wo)
			wo = args[nargs + k];
		else if (PyUnicode_CompareWithASCIIString(kn, "value") == 0 && !vo)
			vo = args[nargs + k];
		else
			goto usage;
	}
	if (!vo)
		goto usage;
	if (!writer_usable(self->writer, "log"))
		return NULL;
	dev = on_device(vo);
	if (dev < 0)
		return NULL;
	v = dev ? 0.0 : tensor_or_number(vo);
	if (v == -1.0 && PyErr_Occurred())
		return NULL;
	if (wo && on_device(wo)) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_TypeError, "weight must be a number or a CPU "
					"tensor (reading a device tensor would wait for the device)");
		return NULL;
	}
	if (wo) {
		wt = as_double(wo);
		if (wt == -1.0 && PyErr_Occurred())
			return NULL;
		if (!(wt >= 0.0) || isinf(wt)) {
			PyErr_Format(PyExc_ValueError,
				     "weight must be finite and >= 0, not %R", wo);
			return NULL;
		}
	}
	if (dev)
		return harvest_log(self->writer, self->id, vo, wt, wo != NULL);
	if (self->writer->deferred)
		return harvest_log_double(self->writer, self->id, v, wt, wo != NULL);
	rc = log_one(self->writer, self->id, v, wt, wo != NULL);
	if (likely(rc == 0 || rc == -ENOBUFS))
		Py_RETURN_NONE;
	return set_error(rc, CTX_WRITE, "log", NULL);
usage:
	PyErr_SetString(PyExc_TypeError, "log(value, weight=1.0)");
	return NULL;
}

/* The hot path: m.log(v). */
static PyObject *Metric_log(MetricObject *self, PyObject *const *args,
			    Py_ssize_t nargs, PyObject *kwnames)
{
	WriterObject *wr = self->writer;
	PyObject *o;
	double v;
	int rc;

	if (unlikely(nargs != 1 || kwnames || !wr->w || wr->on_full == MRING_FULL_WAIT
		     || wr->busy || wr->deferred))
		return metric_log_slow(self, args, nargs, kwnames);
	o = args[0];
	if (likely(PyFloat_CheckExact(o))) {
		v = PyFloat_AS_DOUBLE(o);
	} else {
		int dev = on_device(o);

		if (unlikely(dev))
			return dev < 0 ? NULL : harvest_log(wr, self->id, o, 1.0, 0);
		v = tensor_or_number(o);
		if (v == -1.0 && PyErr_Occurred())
			return NULL;
	}
	rc = mring_log(wr->w, self->id, v);
	if (likely(rc == 0 || rc == -ENOBUFS))
		Py_RETURN_NONE;
	return set_error(rc, CTX_WRITE, "log", NULL);
}

static PyObject *Metric_repr(MetricObject *self)
{
	return PyUnicode_FromFormat("<mring.Metric %R id=%d flags=0x%x>", self->name,
				    self->id, self->flags);
}

static PyMethodDef Metric_methods[] = {
	{"log", (PyCFunction)(void (*)(void))Metric_log, METH_FASTCALL | METH_KEYWORDS,
	 "log(value, weight=1.0): log one value at the current step.  Never raises "
	 "on a full ring (the drop is counted)."},
	{NULL}
};

static PyMemberDef Metric_members[] = {
	{"name", T_OBJECT, offsetof(MetricObject, name), READONLY, "metric name"},
	{"id", T_INT, offsetof(MetricObject, id), READONLY, "metric id"},
	{"flags", T_UINT, offsetof(MetricObject, flags), READONLY, "MRING_* flags"},
	{"writer", T_OBJECT, offsetof(MetricObject, writer), READONLY, "the Writer"},
	{NULL}
};

static PyTypeObject MetricType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "mring.Metric",
	.tp_basicsize = sizeof(MetricObject),
	.tp_dealloc = (destructor)Metric_dealloc,
	.tp_repr = (reprfunc)Metric_repr,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_traverse = (traverseproc)Metric_traverse,
	.tp_doc = "A registered metric; get one from Writer.metric().",
	.tp_methods = Metric_methods,
	.tp_members = Metric_members,
};

/* ------------------------------------------------------------------ */
/* Reader                                                              */
/* ------------------------------------------------------------------ */

typedef struct {
	PyObject_HEAD
	struct mring_reader *r;
	PyObject *names;	/* list: id -> str (names never change) */
	PyObject *path;
	int drain;
} ReaderObject;

static PyTypeObject ReaderType;
static PyTypeObject EventType;

static PyStructSequence_Field event_fields[] = {
	{"seq", "stream position"},
	{"kind", "'value', 'step', 'epoch_value', 'epoch_end', 'lost' or 'epoch_weight'"},
	{"metric", "metric name, or None"},
	{"step", "step current when logged"},
	{"epoch", "epoch current when logged"},
	{"wall_ns", "wall time of the step, ns since the Unix epoch"},
	{"value", "the value (lost: records lost)"},
	{NULL}
};

static PyStructSequence_Desc event_desc = {
	"mring.Event", "One event of the ring.", event_fields, 7
};

static PyObject *kind_names[10];

static int reader_usable(ReaderObject *self)
{
	if (!self->r) {
		PyErr_SetString(PyExc_ValueError, "operation on a closed mring.Reader");
		return 0;
	}
	return 1;
}

static int Reader_init(ReaderObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"path", "observe", "autocommit", NULL};
	PyObject *path, *bpath;
	int observe = 1, autocommit = 1, rc;
	unsigned flags;
	struct mring_reader *r = NULL;

	if (self->r) {
		PyErr_SetString(PyExc_RuntimeError, "mring.Reader already open");
		return -1;
	}
	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pp", kwlist, &path, &observe,
					 &autocommit))
		return -1;
	if (!PyUnicode_FSConverter(path, &bpath))
		return -1;
	flags = observe ? MRING_OBSERVE : MRING_DRAIN;
	if (!observe && !autocommit)
		flags |= MRING_NO_AUTOCOMMIT;
	Py_BEGIN_ALLOW_THREADS
	rc = mring_reader_open(PyBytes_AS_STRING(bpath), flags, &r);
	Py_END_ALLOW_THREADS
	Py_DECREF(bpath);
	if (rc < 0) {
		set_error(rc, CTX_READ, "mring.Reader", path);
		return -1;
	}
	self->r = r;
	self->drain = !observe;
	Py_XSETREF(self->names, PyList_New(0));
	Py_INCREF(path);
	Py_XSETREF(self->path, path);
	return self->names ? 0 : -1;
}

static void Reader_dealloc(ReaderObject *self)
{
	if (self->r)
		mring_reader_close(self->r);
	Py_CLEAR(self->names);
	Py_CLEAR(self->path);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Reader_close(ReaderObject *self, PyObject *unused)
{
	if (self->r) {
		mring_reader_close(self->r);
		self->r = NULL;
	}
	Py_RETURN_NONE;
}

static PyObject *Reader_enter(ReaderObject *self, PyObject *unused)
{
	if (!reader_usable(self))
		return NULL;
	Py_INCREF(self);
	return (PyObject *)self;
}

static PyObject *Reader_exit(ReaderObject *self, PyObject *const *args, Py_ssize_t n)
{
	Reader_close(self, NULL);
	Py_RETURN_FALSE;
}

/*
 * A name from a segment as str.  The segment may come from any producer
 * (another library version, another language, a corrupt file), so its
 * bytes are untrusted: a byte that is not part of well-formed UTF-8
 * becomes U+FFFD instead of raising.  docs/python.md.
 */
static PyObject *segment_text(const char *buf, size_t size)
{
	const char *end = memchr(buf, '\0', size);

	return PyUnicode_DecodeUTF8(buf, end ? end - buf : (Py_ssize_t)size, "replace");
}

/* Bring the name cache up to date; 0 or -1 with an exception. */
static int reader_refresh(ReaderObject *self)
{
	char buf[64];
	int n, id, rc;
	PyObject *s;

	n = mring_metric_count(self->r);
	if (n < 0) {
		set_error(n, CTX_READ, "metric_count", NULL);
		return -1;
	}
	for (id = (int)PyList_GET_SIZE(self->names); id < n; id++) {
		rc = mring_metric_info(self->r, id, buf, sizeof(buf), NULL);
		if (rc < 0) {
			set_error(rc, CTX_READ, "metric_info", NULL);
			return -1;
		}
		s = segment_text(buf, sizeof(buf));
		if (!s || PyList_Append(self->names, s) < 0) {
			Py_XDECREF(s);
			return -1;
		}
		Py_DECREF(s);
	}
	return 0;
}

/* Borrowed name of @id, or None. */
static PyObject *reader_name(ReaderObject *self, int id)
{
	if (id < 0)
		return Py_None;
	if (id >= PyList_GET_SIZE(self->names) && reader_refresh(self) < 0)
		return NULL;
	if (id >= PyList_GET_SIZE(self->names))
		return Py_None;
	return PyList_GET_ITEM(self->names, id);
}

/* Metric id from a name or an int; -1 with an exception. */
static int reader_id(ReaderObject *self, PyObject *o)
{
	Py_ssize_t i, n;
	int pass;

	if (PyLong_Check(o)) {
		long v = PyLong_AsLong(o);
		if (v == -1 && PyErr_Occurred())
			return -1;
		if (v < 0 || v > INT32_MAX) {
			PyErr_Format(PyExc_KeyError, "no metric %R", o);
			return -1;
		}
		return (int)v;
	}
	if (!PyUnicode_Check(o)) {
		PyErr_Format(PyExc_TypeError, "metric must be a name or an id, not %.100s",
			     Py_TYPE(o)->tp_name);
		return -1;
	}
	for (pass = 0; pass < 2; pass++) {
		n = PyList_GET_SIZE(self->names);
		for (i = 0; i < n; i++) {
			int eq = PyUnicode_Compare(PyList_GET_ITEM(self->names, i), o);
			if (eq == 0)
				return (int)i;
		}
		if (pass == 0 && reader_refresh(self) < 0)
			return -1;
	}
	PyErr_SetObject(PyExc_KeyError, o);
	return -1;
}

static PyObject *make_event(ReaderObject *self, const struct mring_event *ev)
{
	PyObject *e = PyStructSequence_New(&EventType), *name, *kind;

	if (!e)
		return NULL;
	name = reader_name(self, ev->metric);
	if (!name) {
		Py_DECREF(e);
		return NULL;
	}
	kind = ev->kind < 10 && kind_names[ev->kind] ? kind_names[ev->kind] : NULL;
	if (kind)
		Py_INCREF(kind);
	else
		kind = PyLong_FromUnsignedLong(ev->kind);
	Py_INCREF(name);
	PyStructSequence_SET_ITEM(e, 0, PyLong_FromUnsignedLongLong(ev->seq));
	PyStructSequence_SET_ITEM(e, 1, kind);
	PyStructSequence_SET_ITEM(e, 2, name);
	PyStructSequence_SET_ITEM(e, 3, PyLong_FromUnsignedLongLong(ev->step));
	PyStructSequence_SET_ITEM(e, 4, PyLong_FromUnsignedLong(ev->epoch));
	PyStructSequence_SET_ITEM(e, 5, PyLong_FromLongLong(ev->wall_ns));
	PyStructSequence_SET_ITEM(e, 6, PyFloat_FromDouble(ev->value));
	for (int i = 0; i < 7; i++)
		if (!PyStructSequence_GET_ITEM(e, i)) {
			Py_DECREF(e);
			return NULL;
		}
	return e;
}

static PyObject *Reader_read(ReaderObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"max", NULL};
	struct mring_event buf[256], *ev = buf;
	int max = 1024, n, i;
	PyObject *list = NULL, *e;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|i", kwlist, &max))
		return NULL;
	if (!reader_usable(self))
		return NULL;
	if (max < 1) {
		PyErr_SetString(PyExc_ValueError, "max must be >= 1");
		return NULL;
	}
	if (max > 256) {
		ev = PyMem_Malloc((size_t)max * sizeof(*ev));
		if (!ev)
			return PyErr_NoMemory();
	}
	n = mring_read(self->r, ev, max);
	if (n < 0) {
		set_error(n, CTX_READ, "read", NULL);
		goto out;
	}
	list = PyList_New(n);
	if (!list)
		goto out;
	for (i = 0; i < n; i++) {
		e = make_event(self, &ev[i]);
		if (!e) {
			Py_CLEAR(list);
			goto out;
		}
		PyList_SET_ITEM(list, i, e);
	}
out:
	if (ev != buf)
		PyMem_Free(ev);
	return list;
}

static PyObject *Reader_iternext(ReaderObject *self)
{
	struct mring_event ev;
	int n;

	if (!reader_usable(self))
		return NULL;
	n = mring_read(self->r, &ev, 1);
	if (n < 0)
		return set_error(n, CTX_READ, "read", NULL);
	if (n == 0)
		return NULL;	/* StopIteration: nothing ready now */
	return make_event(self, &ev);
}

static PyObject *Reader_commit(ReaderObject *self, PyObject *unused)
{
	int rc;

	if (!reader_usable(self))
		return NULL;
	rc = mring_commit(self->r);
	if (rc < 0)
		return set_error(rc, CTX_READ, "commit", NULL);
	Py_RETURN_NONE;
}

static const char *reduce_name(unsigned flags)
{
	if (!(flags & MRING_ON_EPOCH))
		return NULL;
	if (flags & MRING_SUM)
		return "sum";
	if (flags & MRING_MIN)
		return "min";
	if (flags & MRING_MAX)
		return "max";
	return "mean";
}

static PyObject *Reader_metrics(ReaderObject *self, PyObject *unused)
{
	PyObject *d, *info, *name;
	unsigned flags;
	int n, id, rc;
	const char *red;

	if (!reader_usable(self) || reader_refresh(self) < 0)
		return NULL;
	d = PyDict_New();
	if (!d)
		return NULL;
	n = (int)PyList_GET_SIZE(self->names);
	for (id = 0; id < n; id++) {
		rc = mring_metric_info(self->r, id, NULL, 0, &flags);
		if (rc < 0) {
			Py_DECREF(d);
			return set_error(rc, CTX_READ, "metric_info", NULL);
		}
		name = PyList_GET_ITEM(self->names, id);
		red = reduce_name(flags);
		info = Py_BuildValue("{s:i,s:O,s:O,s:O,s:s,s:O,s:I}", "id", id,
				     "name", name,
				     "on_step", flags & MRING_ON_STEP ? Py_True : Py_False,
				     "on_epoch", flags & MRING_ON_EPOCH ? Py_True : Py_False,
				     "reduce", red,
				     "prog_bar", flags & MRING_PROG_BAR ? Py_True : Py_False,
				     "flags", flags);
		if (!info || PyDict_SetItem(d, name, info) < 0) {
			Py_XDECREF(info);
			Py_DECREF(d);
			return NULL;
		}
		Py_DECREF(info);
	}
	return d;
}

static PyObject *stats_dict(const struct mring_stats *s)
{
	return Py_BuildValue("{s:I,s:K,s:K,s:d,s:d,s:d,s:d,s:d,s:d,s:K,s:s,s:I}",
			     "epoch", s->epoch, "count", (unsigned long long)s->count,
			     "nonfinite", (unsigned long long)s->nonfinite,
			     "weight", s->weight, "sum", s->sum, "value", s->value,
			     "min", s->min, "max", s->max, "last", s->last,
			     "last_step", (unsigned long long)s->last_step,
			     "reduce", reduce_name(s->flags), "flags", s->flags);
}

static PyObject *reader_stats(ReaderObject *self, PyObject *o, int epoch)
{
	struct mring_stats s;
	int id, rc, tries = 0;

	if (!reader_usable(self))
		return NULL;
	id = reader_id(self, o);
	if (id < 0)
		return NULL;
	do {
		rc = epoch ? mring_epoch_read(self->r, id, &s) :
			     mring_stats_read(self->r, id, &s);
	} while (rc == -EAGAIN && ++tries < 100);
	if (rc == -ENOENT && epoch)
		Py_RETURN_NONE;
	if (rc == -EINVAL) {
		PyErr_SetObject(PyExc_KeyError, o);
		return NULL;
	}
	if (rc < 0)
		return set_error(rc, CTX_READ, epoch ? "epoch" : "stats", NULL);
	return stats_dict(&s);
}

static PyObject *Reader_stats(ReaderObject *self, PyObject *o)
{
	return reader_stats(self, o, 0);
}

static PyObject *Reader_epoch(ReaderObject *self, PyObject *o)
{
	return reader_stats(self, o, 1);
}

static PyObject *Reader_status(ReaderObject *self, PyObject *unused)
{
	struct mring_status s;
	PyObject *run, *d;
	int rc;

	if (!reader_usable(self))
		return NULL;
	rc = mring_status_read(self->r, &s);
	if (rc < 0)
		return set_error(rc, CTX_READ, "status", NULL);
	run = segment_text(s.run, sizeof(s.run));
	if (!run)
		return NULL;
	d = Py_BuildValue("{s:i,s:O,s:O,s:i,s:O,s:K,s:K,s:K,s:K,s:K,s:K,s:I,"
			  "s:s,s:I,s:O,s:L,s:L}",
			  "pid", s.pid, "alive", s.alive ? Py_True : Py_False,
			  "closed", s.closed ? Py_True : Py_False, "rank", s.rank,
			  "run", run, "capacity", (unsigned long long)s.capacity,
			  "written", (unsigned long long)s.written,
			  "read", (unsigned long long)s.read,
			  "dropped", (unsigned long long)s.dropped,
			  "overwritten", (unsigned long long)s.overwritten,
			  "step", (unsigned long long)s.step, "epoch", s.epoch,
			  "on_full", s.on_full >= 0 && s.on_full < 3 ?
					on_full_names[s.on_full] : "?",
			  "metrics", s.metrics,
			  "drainer", s.drainer ? Py_True : Py_False,
			  "step_wall_ns", (long long)s.step_wall_ns,
			  "created_ns", (long long)s.created_ns);
	Py_DECREF(run);
	return d;
}

/* r.hparams(): the dict the producer stored, or None. */
static PyObject *Reader_hparams(ReaderObject *self, PyObject *unused)
{
	PyObject *text, *obj;
	char *buf;
	int rc;

	if (!reader_usable(self))
		return NULL;
	buf = PyMem_Malloc(MRING_HPARAMS_MAX + 1);
	if (!buf)
		return PyErr_NoMemory();
	rc = mring_hparams_read(self->r, buf, MRING_HPARAMS_MAX + 1);
	if (rc == -ENOENT) {
		PyMem_Free(buf);
		Py_RETURN_NONE;
	}
	if (rc < 0) {
		PyMem_Free(buf);
		return set_error(rc, CTX_READ, "hparams", NULL);
	}
	text = PyUnicode_DecodeUTF8(buf, rc, "strict");
	PyMem_Free(buf);
	if (!text)
		return NULL;
	obj = json_call("loads", text, NULL);
	Py_DECREF(text);
	return obj;
}

static PyObject *Reader_get_closed(ReaderObject *self, void *c)
{
	return PyBool_FromLong(self->r == NULL);
}

static PyMethodDef Reader_methods[] = {
	{"read", (PyCFunction)(void (*)(void))Reader_read, METH_VARARGS | METH_KEYWORDS,
	 "read(max=1024) -> list of Event (empty: nothing ready now; never blocks)"},
	{"commit", (PyCFunction)Reader_commit, METH_NOARGS,
	 "commit the drain position (drainer with autocommit=False)"},
	{"metrics", (PyCFunction)Reader_metrics, METH_NOARGS,
	 "metrics() -> {name: {id, name, on_step, on_epoch, reduce, prog_bar, flags}}"},
	{"stats", (PyCFunction)Reader_stats, METH_O,
	 "stats(metric) -> dict: live statistics of the current epoch"},
	{"epoch", (PyCFunction)Reader_epoch, METH_O,
	 "epoch(metric) -> dict of the last completed epoch, or None"},
	{"status", (PyCFunction)Reader_status, METH_NOARGS, "status() -> dict"},
	{"hparams", (PyCFunction)Reader_hparams, METH_NOARGS,
	 "hparams() -> the producer's hyperparameters (a dict), or None"},
	{"close", (PyCFunction)Reader_close, METH_NOARGS, "detach"},
	{"__enter__", (PyCFunction)Reader_enter, METH_NOARGS, NULL},
	{"__exit__", (PyCFunction)(void (*)(void))Reader_exit, METH_FASTCALL, NULL},
	{NULL}
};

static PyMemberDef Reader_members[] = {
	{"path", T_OBJECT, offsetof(ReaderObject, path), READONLY, "segment path"},
	{NULL}
};

static PyGetSetDef Reader_getset[] = {
	{"closed", (getter)Reader_get_closed, NULL, "True once closed", NULL},
	{NULL}
};

static PyObject *Reader_iter(PyObject *self)
{
	if (!reader_usable((ReaderObject *)self))
		return NULL;
	Py_INCREF(self);
	return self;
}

static PyTypeObject ReaderType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "mring.Reader",
	.tp_basicsize = sizeof(ReaderObject),
	.tp_dealloc = (destructor)Reader_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
	.tp_doc = "Reader(path, observe=True, autocommit=True)\n\n"
		  "Attach to a segment as an observer (default) or as its drainer.\n"
		  "Iterating yields the events ready now and stops (never blocks).",
	.tp_methods = Reader_methods,
	.tp_members = Reader_members,
	.tp_getset = Reader_getset,
	.tp_iter = Reader_iter,
	.tp_iternext = (iternextfunc)Reader_iternext,
	.tp_init = (initproc)Reader_init,
	.tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------ */
/* Module                                                              */
/* ------------------------------------------------------------------ */

static PyObject *mod_strerror(PyObject *m, PyObject *arg)
{
	int e = PyLong_AsLong(arg);

	if (e == -1 && PyErr_Occurred())
		return NULL;
	return PyUnicode_FromString(mring_strerror(e));
}

/* _route_all_tensors(flag): tests treat CPU tensors as device tensors */
static PyObject *mod_route_all(PyObject *m, PyObject *flag)
{
	int r = PyObject_IsTrue(flag);

	if (r < 0)
		return NULL;
	route_all = r;
	Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
	{"strerror", mod_strerror, METH_O, "strerror(err) -> str"},
	{"_route_all_tensors", mod_route_all, METH_O, NULL},
	{NULL}
};

static struct PyModuleDef moduledef = {
	PyModuleDef_HEAD_INIT, "mring._mring",
	"CPython binding of mring (shared-memory metric ring).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__mring(void)
{
	static const char *kinds[10] = {NULL, "value", "step", "epoch_value",
					"epoch_end", "lost", "epoch_weight", NULL, NULL,
					"rewind"};
	PyObject *m;
	int i;

	if (PyType_Ready(&WriterType) < 0 || PyType_Ready(&MetricType) < 0 ||
	    PyType_Ready(&ReaderType) < 0)
		return NULL;
	if (!EventType.tp_name &&
	    PyStructSequence_InitType2(&EventType, &event_desc) < 0)
		return NULL;
	for (i = 0; i < 10; i++)
		if (kinds[i] && !kind_names[i]) {
			kind_names[i] = PyUnicode_InternFromString(kinds[i]);
			if (!kind_names[i])
				return NULL;
		}
	if (!str_torch) {
		str_torch = PyUnicode_InternFromString("torch");
		str_is_cpu = PyUnicode_InternFromString("is_cpu");
		str_item = PyUnicode_InternFromString("item");
		if (!str_torch || !str_is_cpu || !str_item)
			return NULL;
	}
	m = PyModule_Create(&moduledef);
	if (!m)
		return NULL;
	Py_INCREF(&WriterType);
	Py_INCREF(&MetricType);
	Py_INCREF(&ReaderType);
	Py_INCREF(&EventType);
	if (PyModule_AddObject(m, "Writer", (PyObject *)&WriterType) < 0 ||
	    PyModule_AddObject(m, "Metric", (PyObject *)&MetricType) < 0 ||
	    PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0 ||
	    PyModule_AddObject(m, "Event", (PyObject *)&EventType) < 0 ||
	    PyModule_AddIntConstant(m, "ON_STEP", MRING_ON_STEP) < 0 ||
	    PyModule_AddIntConstant(m, "ON_EPOCH", MRING_ON_EPOCH) < 0 ||
	    PyModule_AddIntConstant(m, "MEAN", MRING_MEAN) < 0 ||
	    PyModule_AddIntConstant(m, "SUM", MRING_SUM) < 0 ||
	    PyModule_AddIntConstant(m, "MIN", MRING_MIN) < 0 ||
	    PyModule_AddIntConstant(m, "MAX", MRING_MAX) < 0 ||
	    PyModule_AddIntConstant(m, "PROG_BAR", MRING_PROG_BAR) < 0 ||
	    PyModule_AddIntConstant(m, "NAME_MAX", MRING_NAME_MAX) < 0 ||
	    PyModule_AddStringConstant(m, "C_VERSION", "0.1.0") < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
