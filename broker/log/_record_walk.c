/*
 * The optional C walk of a stored batch's record lengths, and the writing of a batch's
 * payload (broker/log/records.py holds the contract and the Python code with the same
 * results; broker/compiled.py loads this module).
 *
 * The payload is count x (pk_len u16 | data_len u32 | partition key | data), big-endian.
 *
 * payload(keys, datas) -> bytes: the payload of the records whose UTF-8 partition keys and
 *     data are the bytes objects of the tuples `keys` and `datas` (of one length), in one
 *     allocation; ValueError when a key is longer than a u16 or a data longer than a u32.
 *
 * skip(value, position, count) -> position: the position after `count` records from
 *     `position`.
 * take(value, position, index, stop, room, taken_bytes, bytes_max, first_taken) ->
 *     (position, index, run_bytes, capped): records from `position` (record `index` of the
 *     batch) while index < stop, each of pk_len + data_len bytes, until `room` records were
 *     taken or the next one would bring taken_bytes + run_bytes past bytes_max (unless none
 *     was taken yet: `first_taken` false and this is the first record); `capped` says a cap
 *     stopped it.
 *
 * Both raise struct.error where a record's length head would be read past the value, as the
 * Python walk's struct.unpack_from does; a position past the value after the last head is
 * the caller's to check, as in the Python walk.
 *
 * crc32c(crc, value, start) -> int or None: CRC32C (Castagnoli, as google-crc32c computes it)
 *     of value[start:], extending `crc`, without copying the slice; by the CPU's SSE 4.2
 *     instruction and without the GIL (it only reads `value`, which is immutable and which the
 *     call's arguments keep alive). None where that instruction is missing: the caller then
 *     uses google-crc32c. (A batch's checksum covers its payload after the stored CRC: the
 *     slice google-crc32c needs cost more than the checksum itself, a fresh 0.5 MB per batch.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifndef SOURCE_SHA256
#define SOURCE_SHA256 ""
#endif

#define RECORD_HEADER 6

static PyObject *layout_error; /* struct.error */

static int record_size(const unsigned char *value, Py_ssize_t length, Py_ssize_t position,
                       Py_ssize_t *size) {
    if (position < 0 || length - position < RECORD_HEADER) {
        PyErr_SetString(layout_error, "a record's length head lies past the batch");
        return -1;
    }
    const unsigned char *head = value + position;
    uint64_t key_length = ((uint64_t)head[0] << 8) | head[1];
    uint64_t data_length = ((uint64_t)head[2] << 24) | ((uint64_t)head[3] << 16)
                           | ((uint64_t)head[4] << 8) | head[5];
    *size = (Py_ssize_t)(key_length + data_length);
    return 0;
}

static PyObject *skip(PyObject *module, PyObject *args) {
    const unsigned char *value;
    Py_ssize_t length, position, count, size;
    (void)module;
    if (!PyArg_ParseTuple(args, "y#nn:skip", &value, &length, &position, &count)) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        if (record_size(value, length, position, &size) < 0) {
            return NULL;
        }
        position += RECORD_HEADER + size;
    }
    return PyLong_FromSsize_t(position);
}

static PyObject *take(PyObject *module, PyObject *args) {
    const unsigned char *value;
    Py_ssize_t length, position, index, stop, room, taken_bytes, bytes_max, size;
    int first_taken;
    (void)module;
    if (!PyArg_ParseTuple(args, "y#nnnnnnp:take", &value, &length, &position, &index, &stop,
                          &room, &taken_bytes, &bytes_max, &first_taken)) {
        return NULL;
    }
    Py_ssize_t first = index, run_bytes = 0;
    int capped = 0;
    while (index < stop) {
        if (record_size(value, length, position, &size) < 0) {
            return NULL;
        }
        if (taken_bytes + run_bytes + size > bytes_max && (first_taken || index > first)) {
            capped = 1;
            break;
        }
        position += RECORD_HEADER + size;
        run_bytes += size;
        index += 1;
        if (index - first == room) {
            capped = 1;
            break;
        }
    }
    return Py_BuildValue("nnnO", position, index, run_bytes, capped ? Py_True : Py_False);
}

static PyObject *payload(PyObject *module, PyObject *args) {
    PyObject *keys, *datas;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!O!:payload", &PyTuple_Type, &keys, &PyTuple_Type, &datas)) {
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(keys);
    if (PyTuple_GET_SIZE(datas) != count) {
        PyErr_SetString(PyExc_ValueError, "keys and datas differ in length");
        return NULL;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys, k), *data = PyTuple_GET_ITEM(datas, k);
        if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(data)) {
            PyErr_SetString(PyExc_TypeError, "a key or a data is not bytes");
            return NULL;
        }
        Py_ssize_t key_length = PyBytes_GET_SIZE(key), data_length = PyBytes_GET_SIZE(data);
        if (key_length > 0xFFFF || (uint64_t)data_length > 0xFFFFFFFFu) {
            PyErr_SetString(PyExc_ValueError, "a key or a data is too long for its length head");
            return NULL;
        }
        if (total > PY_SSIZE_T_MAX - RECORD_HEADER - key_length - data_length) {
            return PyErr_NoMemory();
        }
        total += RECORD_HEADER + key_length + data_length;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys, k), *data = PyTuple_GET_ITEM(datas, k);
        uint64_t key_length = (uint64_t)PyBytes_GET_SIZE(key);
        uint64_t data_length = (uint64_t)PyBytes_GET_SIZE(data);
        out[0] = (unsigned char)(key_length >> 8);
        out[1] = (unsigned char)key_length;
        out[2] = (unsigned char)(data_length >> 24);
        out[3] = (unsigned char)(data_length >> 16);
        out[4] = (unsigned char)(data_length >> 8);
        out[5] = (unsigned char)data_length;
        out += RECORD_HEADER;
        memcpy(out, PyBytes_AS_STRING(key), (size_t)key_length);
        out += key_length;
        memcpy(out, PyBytes_AS_STRING(data), (size_t)data_length);
        out += data_length;
    }
    return result;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define HAVE_CRC32C_INSTRUCTION 1

/* The instruction takes 3 cycles and can start one per cycle: three streams over three
   consecutive blocks keep it busy, and their registers are joined by shifting each past the
   blocks after it. The CRC register (before its final inversion) is linear over GF(2) in the
   register and the data together, so the register after A then B is the register after A
   shifted past len(B) zero bytes, xor the register B alone leaves from 0. Shifting past
   STREAM_BLOCK zero bytes is a 32x32 bit matrix, applied as four 256-entry tables made once. */
#define STREAM_BLOCK 4096
static uint32_t shift_block[4][256];
static int shift_block_ready = 0;

__attribute__((target("sse4.2"))) static uint32_t crc32c_zeros(uint32_t state, size_t length) {
    uint64_t wide = state;
    for (size_t i = 0; i < length / 8; i++) {
        wide = _mm_crc32_u64(wide, 0);
    }
    return (uint32_t)wide;
}

static void make_shift_block(void) {
    for (int b = 0; b < 4; b++) {
        for (uint32_t v = 0; v < 256; v++) {
            shift_block[b][v] = crc32c_zeros(v << (8 * b), STREAM_BLOCK);
        }
    }
    shift_block_ready = 1;
}

static uint32_t shifted_past_block(uint32_t state) {
    return shift_block[0][state & 0xFF] ^ shift_block[1][(state >> 8) & 0xFF]
           ^ shift_block[2][(state >> 16) & 0xFF] ^ shift_block[3][state >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_extend(uint32_t crc,
                                                                 const unsigned char *data,
                                                                 size_t length) {
    uint64_t state = ~crc & 0xFFFFFFFFu;
    while (length >= 3 * STREAM_BLOCK) {
        uint64_t second = 0, third = 0;
        for (size_t i = 0; i < STREAM_BLOCK; i += 8) {
            uint64_t a, b, c;
            memcpy(&a, data + i, 8);
            memcpy(&b, data + STREAM_BLOCK + i, 8);
            memcpy(&c, data + 2 * STREAM_BLOCK + i, 8);
            state = _mm_crc32_u64(state, a);
            second = _mm_crc32_u64(second, b);
            third = _mm_crc32_u64(third, c);
        }
        state = shifted_past_block((uint32_t)state) ^ (uint32_t)second;
        state = shifted_past_block((uint32_t)state) ^ (uint32_t)third;
        data += 3 * STREAM_BLOCK;
        length -= 3 * STREAM_BLOCK;
    }
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, data, 8);
        state = _mm_crc32_u64(state, word);
        data += 8;
        length -= 8;
    }
    uint32_t small = (uint32_t)state;
    while (length > 0) {
        small = _mm_crc32_u8(small, *data++);
        length--;
    }
    return ~small;
}
#endif

static PyObject *crc32c(PyObject *module, PyObject *args) {
    unsigned int crc;
    const unsigned char *value;
    Py_ssize_t length, start;
    (void)module;
    if (!PyArg_ParseTuple(args, "Iy#n:crc32c", &crc, &value, &length, &start)) {
        return NULL;
    }
    if (start < 0 || start > length) {
        PyErr_SetString(PyExc_ValueError, "start lies outside the value");
        return NULL;
    }
#ifdef HAVE_CRC32C_INSTRUCTION
    if (shift_block_ready) {
        uint32_t result;
        Py_BEGIN_ALLOW_THREADS
        result = crc32c_extend((uint32_t)crc, value + start, (size_t)(length - start));
        Py_END_ALLOW_THREADS
        return PyLong_FromUnsignedLong(result);
    }
#endif
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"crc32c", crc32c, METH_VARARGS, "crc32c(crc, value, start) -> int | None"},
    {"skip", skip, METH_VARARGS, "skip(value, position, count) -> position"},
    {"take", take, METH_VARARGS,
     "take(value, position, index, stop, room, taken_bytes, bytes_max, first_taken) -> "
     "(position, index, run_bytes, capped)"},
    {"payload", payload, METH_VARARGS, "payload(keys, datas) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_record_walk",
    "The C walk of a stored batch's record lengths and its payload (see broker/log/records.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__record_walk(void) {
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL) {
        return NULL;
    }
    PyObject *struct_module = PyImport_ImportModule("struct");
    if (struct_module == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    layout_error = PyObject_GetAttrString(struct_module, "error"); /* kept for good */
    Py_DECREF(struct_module);
#ifdef HAVE_CRC32C_INSTRUCTION
    if (__builtin_cpu_supports("sse4.2")) {
        make_shift_block(); /* about half a million instructions, once */
    }
#endif
    if (layout_error == NULL
        || PyModule_AddStringConstant(module, "SOURCE_SHA256", SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
