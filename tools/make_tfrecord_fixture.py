#!/usr/bin/python3
"""make_tfrecord_fixture.py - writes tests/data/flowers_sample.tfrecord: the first PER_CLASS
photos (sorted by name) of each class of tests/data/flowers_sample as tf.Example records with
TFDS tf_flowers' keys ("image" bytes, "label" int64) and label order, framed as TFRecord.

An independent implementation of both the protobuf encoding (Debian's python3-protobuf, with
the tf.Example schema built in code so TensorFlow is not needed) and the TFRecord CRC, so the
C reader is checked against something it did not write. Usage: tools/make_tfrecord_fixture.py
"""
import os
import struct

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, "..", "tests", "data", "flowers_sample")
OUT = os.path.join(HERE, "..", "tests", "data", "flowers_sample.tfrecord")
PER_CLASS = 2
TFDS_CLASSES = ["dandelion", "daisy", "tulips", "sunflowers", "roses"]


def example_class():
    T = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="pollen_example.proto", package="tensorflow", syntax="proto3")

    def msg(name, fields, nested=None, options=None):
        m = fd.message_type.add(name=name) if nested is None else nested.nested_type.add(name=name)
        for fname, num, ftype, label, tname, oneof in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname
            if oneof is not None:
                f.oneof_index = oneof
        if options:
            m.options.map_entry = True
        return m

    R, O = T.LABEL_REPEATED, T.LABEL_OPTIONAL
    msg("BytesList", [("value", 1, T.TYPE_BYTES, R, None, None)])
    msg("FloatList", [("value", 1, T.TYPE_FLOAT, R, None, None)])
    msg("Int64List", [("value", 1, T.TYPE_INT64, R, None, None)])
    feat = msg("Feature", [("bytes_list", 1, T.TYPE_MESSAGE, O, ".tensorflow.BytesList", 0),
                           ("float_list", 2, T.TYPE_MESSAGE, O, ".tensorflow.FloatList", 0),
                           ("int64_list", 3, T.TYPE_MESSAGE, O, ".tensorflow.Int64List", 0)])
    feat.oneof_decl.add(name="kind")
    feats = msg("Features", [("feature", 1, T.TYPE_MESSAGE, R, ".tensorflow.Features.FeatureEntry", None)])
    msg("FeatureEntry", [("key", 1, T.TYPE_STRING, O, None, None),
                         ("value", 2, T.TYPE_MESSAGE, O, ".tensorflow.Feature", None)], nested=feats, options=True)
    msg("Example", [("features", 1, T.TYPE_MESSAGE, O, ".tensorflow.Features", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName("tensorflow.Example"))


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def main():
    Example = example_class()
    n = 0
    with open(OUT, "wb") as out:
        for cls in sorted(os.listdir(SAMPLE)):
            if not os.path.isdir(os.path.join(SAMPLE, cls)):
                continue
            for f in sorted(os.listdir(os.path.join(SAMPLE, cls)))[:PER_CLASS]:
                ex = Example()
                ex.features.feature["image"].bytes_list.value.append(open(os.path.join(SAMPLE, cls, f), "rb").read())
                ex.features.feature["label"].int64_list.value.append(TFDS_CLASSES.index(cls))
                data = ex.SerializeToString()
                length = struct.pack("<Q", len(data))
                out.write(length + struct.pack("<I", masked(length)) + data + struct.pack("<I", masked(data)))
                n += 1
    print("wrote %d records to %s" % (n, OUT))


main()
