#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""tfevents_check.py - an independent reader for the tfevents files mring writes.

Shares no code with src/tool/sink_tfevents.c: framing CRCs come from
python3-crc32c, the Event payload is decoded by python3-protobuf from
tests/tb_min.proto, compiled by protoc into a temporary directory.

Usage: /usr/bin/python3 tfevents_check.py [--wall] [--hparams] FILE

Prints one line per scalar, "step tag value" (value: repr of the float32
simple_value; with --wall, the event's wall_time follows), then
"records N OK".  Exits non-zero on any framing, CRC or protobuf error.
The hparams plugin's summaries (tag _hparams_/session_start_info or
_hparams_/session_end_info, plugin "hparams", a null tensor) are checked
too; with --hparams each is printed as "hparams TAG JSON", JSON being
{"hparams": {...}, "start_time_secs": T} or {"status": "STATUS_SUCCESS",
"end_time_secs": T}.
Needs Debian's python3-crc32c, python3-protobuf and protobuf-compiler.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import crc32c


def masked(b):
    c = crc32c.crc32c(b)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def load_pb(tmp):
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(['protoc', '-I', here, '--python_out=' + tmp,
                    os.path.join(here, 'tb_min.proto')], check=True)
    sys.path.insert(0, tmp)
    import tb_min_pb2
    return tb_min_pb2


def fail(msg):
    sys.stderr.write('tfevents_check: %s\n' % msg)
    sys.exit(1)


HP_TAGS = {'_hparams_/session_start_info': 'session_start_info',
           '_hparams_/session_end_info': 'session_end_info'}


def pb_value(v):
    kind = v.WhichOneof('kind')
    if kind is None:
        raise ValueError('a google.protobuf.Value without a kind')
    return None if kind == 'null_value' else getattr(v, kind)


def hparams_summary(pb, n, v):
    """The hparams plugin's summary @v as a dict; fail() on anything else."""
    if v.tag not in HP_TAGS:
        fail('record %d: tag %s: plugin data of an unknown tag' % (n, v.tag))
    if v.metadata.plugin_data.plugin_name != 'hparams':
        fail('record %d: tag %s: plugin %r' % (n, v.tag, v.metadata.plugin_data.plugin_name))
    t = v.tensor
    if (v.WhichOneof('value') != 'tensor' or t.dtype != 1 or len(t.tensor_shape.dim) != 1
            or t.tensor_shape.dim[0].size != 0):
        fail('record %d: tag %s: not the null tensor' % (n, v.tag))
    data = pb.HParamsPluginData()
    data.ParseFromString(v.metadata.plugin_data.content)
    if data.version != 0:
        fail('record %d: HParamsPluginData version %d' % (n, data.version))
    if data.WhichOneof('data') != HP_TAGS[v.tag]:
        fail('record %d: tag %s holds %s' % (n, v.tag, data.WhichOneof('data')))
    if v.tag.endswith('start_info'):
        s = data.session_start_info
        return {'hparams': {k: pb_value(x) for k, x in s.hparams.items()},
                'start_time_secs': s.start_time_secs}
    e = data.session_end_info
    return {'status': pb.Status.Name(e.status), 'end_time_secs': e.end_time_secs}


def check(pb, buf, wall, hparams=False):
    pos = n = 0
    while pos < len(buf):
        if len(buf) - pos < 12:
            fail('record %d: truncated header at %d' % (n, pos))
        hdr = buf[pos:pos + 8]
        (ln,) = struct.unpack('<Q', hdr)
        (hc,) = struct.unpack('<I', buf[pos + 8:pos + 12])
        if hc != masked(hdr):
            fail('record %d: bad length crc at %d' % (n, pos))
        if len(buf) - pos - 12 < ln + 4:
            fail('record %d: truncated data at %d' % (n, pos))
        data = buf[pos + 12:pos + 12 + ln]
        (dc,) = struct.unpack('<I', buf[pos + 12 + ln:pos + 16 + ln])
        if dc != masked(data):
            fail('record %d: bad data crc at %d' % (n, pos))
        pos += 16 + ln
        ev = pb.Event()
        ev.ParseFromString(data)
        what = ev.WhichOneof('what')
        if n == 0:
            if what != 'file_version' or ev.file_version != 'brain.Event:2':
                fail('record 0 is not Event{file_version="brain.Event:2"}')
        elif what != 'summary':
            fail('record %d: expected a summary, got %s' % (n, what))
        for v in ev.summary.value:
            if v.HasField('metadata'):
                got = hparams_summary(pb, n, v)
                if hparams:
                    print('hparams %s %s' % (v.tag, json.dumps(got)))
                continue
            if v.WhichOneof('value') != 'simple_value':
                fail('record %d: tag %s has no simple_value' % (n, v.tag))
            line = '%d %s %r' % (ev.step, v.tag, v.simple_value)
            if wall:
                line += ' %r' % ev.wall_time
            print(line)
        n += 1
    print('records', n, 'OK')


def main():
    args = sys.argv[1:]
    wall = '--wall' in args
    hparams = '--hparams' in args
    args = [a for a in args if a not in ('--wall', '--hparams')]
    if len(args) != 1:
        fail('usage: tfevents_check.py [--wall] [--hparams] FILE')
    with open(args[0], 'rb') as f:
        buf = f.read()
    with tempfile.TemporaryDirectory() as tmp:
        pb = load_pb(tmp)
        try:
            check(pb, buf, wall, hparams)
        except Exception as e:      # protobuf DecodeError and friends
            fail('%s: %s' % (type(e).__name__, e))


if __name__ == '__main__':
    main()
