/*
 * The optional C writer of GetRecords' gRPC page (broker/wire/record_fields.py holds the
 * contract, the pure-Python writer with the same output, and the choice between the two).
 *
 * write_page(runs, tail[, release_gil]) -> bytes: for each run, each record's GetRecordsOutput.records field
 * (tag, length, then the Record's sequence_number, approximate_arrival_timestamp, data,
 * partition_key and encryption_type fields in field order), written straight from the stored
 * batch bytes into one bytes object, followed by `tail`. A run is the tuple
 *
 *     (value, start, end, count, digits, first_limbs, step_limbs, arrival, encryption)
 *
 * value: the batch bytes in the clear; [start, end): its `count` records in the stored layout
 * (pk_len u16 | data_len u32 | partition key | data, big-endian); digits: the decimal length
 * of every sequence number of the run (at most 72); first_limbs, step_limbs: the first number
 * and the step between two records' numbers, as four base-10^18 limbs, least significant
 * first; arrival: the whole arrival field; encryption: the whole encryption_type field, or b"".
 *
 * The layout is checked before anything is written (ValueError, never a read past a buffer).
 * The page is sized exactly first, so each data and key byte is copied once. A record's sequence
 * number is the previous record's digits with only the limbs that changed written again (two
 * digits per division). By default the GIL stays held: the page takes a few milliseconds, and
 * giving the GIL up costs up to a switch interval (5 ms) to take it back while another thread
 * runs Python, which a request waiting on the page would pay. A page written ahead in a worker
 * thread (`release_gil` true) gives it up while it copies: the event loop goes on meanwhile, and
 * the worker's wait for the GIL delays only a page nobody waits on yet. The copy touches only
 * the page (not yet shared) and the runs' values, which `runs` keeps alive; nothing it reads
 * can change, as bytes objects are immutable.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifndef SOURCE_SHA256
#define SOURCE_SHA256 ""
#endif

#define LIMB 1000000000000000000ULL
#define LIMB_DIGITS 18
#define LIMBS 4
#define RECORD_HEADER 6

typedef struct {
    const unsigned char *value;
    Py_ssize_t value_length, start, end, count;
    int digits;
    unsigned long long first[LIMBS], step[LIMBS];
    const char *arrival, *encryption;
    Py_ssize_t arrival_length, encryption_length;
} run_t;

static Py_ssize_t varint_length(uint64_t value) {
    Py_ssize_t length = 1;
    while (value >= 0x80) {
        value >>= 7;
        length++;
    }
    return length;
}

static char *put_varint(char *out, uint64_t value) {
    while (value >= 0x80) {
        *out++ = (char)((value & 0x7f) | 0x80);
        value >>= 7;
    }
    *out++ = (char)value;
    return out;
}

/* The Record message's length (everything after its own tag and length head). */
static uint64_t record_size(const run_t *run, uint64_t key_length, uint64_t data_length) {
    return 2 + (uint64_t)run->digits + (uint64_t)run->arrival_length + 1
           + (uint64_t)varint_length(data_length) + data_length + 1
           + (uint64_t)varint_length(key_length) + key_length
           + (uint64_t)run->encryption_length;
}

static int parse_run(PyObject *item, run_t *run) {
    Py_ssize_t value_length = 0;
    if (!PyArg_ParseTuple(
            item, "y#nnni(KKKK)(KKKK)y#y#;a run is (value, start, end, count, digits, "
                  "first_limbs, step_limbs, arrival, encryption)",
            &run->value, &value_length, &run->start, &run->end, &run->count, &run->digits,
            &run->first[0], &run->first[1], &run->first[2], &run->first[3], &run->step[0],
            &run->step[1], &run->step[2], &run->step[3], &run->arrival, &run->arrival_length,
            &run->encryption, &run->encryption_length)) {
        return -1;
    }
    run->value_length = value_length;
    if (run->start < 0 || run->start > run->end || run->end > value_length || run->count < 0) {
        PyErr_SetString(PyExc_ValueError, "a run's bounds lie outside its value");
        return -1;
    }
    if (run->digits < 1 || run->digits > LIMBS * LIMB_DIGITS) {
        PyErr_SetString(PyExc_ValueError, "a sequence number has 1 to 72 digits");
        return -1;
    }
    for (int i = 0; i < LIMBS; i++) {
        if (run->first[i] >= LIMB || run->step[i] >= LIMB) {
            PyErr_SetString(PyExc_ValueError, "a limb is below 10**18");
            return -1;
        }
    }
    return 0;
}

/* The bytes the run's records take on the page; -1 with ValueError if the layout is broken. */
static Py_ssize_t run_page_bytes(const run_t *run) {
    const unsigned char *value = run->value;
    Py_ssize_t position = run->start, total = 0;
    for (Py_ssize_t k = 0; k < run->count; k++) {
        if (run->end - position < RECORD_HEADER) {
            PyErr_SetString(PyExc_ValueError, "a run's records run past its end");
            return -1;
        }
        uint64_t key_length = ((uint64_t)value[position] << 8) | value[position + 1];
        uint64_t data_length = ((uint64_t)value[position + 2] << 24)
                               | ((uint64_t)value[position + 3] << 16)
                               | ((uint64_t)value[position + 4] << 8) | value[position + 5];
        if ((uint64_t)(run->end - position - RECORD_HEADER) < key_length + data_length) {
            PyErr_SetString(PyExc_ValueError, "a run's records run past its end");
            return -1;
        }
        uint64_t size = record_size(run, key_length, data_length);
        total += 1 + varint_length(size) + (Py_ssize_t)size;
        position += RECORD_HEADER + (Py_ssize_t)(key_length + data_length);
    }
    if (position != run->end) {
        PyErr_SetString(PyExc_ValueError, "a run's records do not end at its end");
        return -1;
    }
    return total;
}

static const char DIGIT_PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* `width` decimal digits of `limb`, zero-padded, ending just before `end`. */
static void put_limb(char *end, unsigned long long limb, int width) {
    for (; width >= 2; width -= 2) {
        unsigned pair = (unsigned)(limb % 100);
        limb /= 100;
        end -= 2;
        memcpy(end, DIGIT_PAIRS + 2 * pair, 2);
    }
    if (width == 1) {
        end[-1] = (char)('0' + limb % 10);
    }
}

/* The digits of limb i of a `digits`-long number: 18, fewer for the most significant one. */
static int limb_width(int digits, int i) {
    int width = digits - i * LIMB_DIGITS;
    return width <= 0 ? 0 : (width > LIMB_DIGITS ? LIMB_DIGITS : width);
}

/* The run's records; each sequence number is the previous one's digits with only the limbs
   that changed written again (the lowest, and a higher one on a carry). */
static char *write_run(const run_t *run, char *out) {
    const unsigned char *value = run->value;
    unsigned long long number[LIMBS];
    char digits[LIMBS * LIMB_DIGITS];
    char *digits_end = digits + run->digits;
    memcpy(number, run->first, sizeof number);
    for (int i = 0; i < LIMBS; i++) {
        put_limb(digits_end - i * LIMB_DIGITS, number[i], limb_width(run->digits, i));
    }
    Py_ssize_t position = run->start;
    for (Py_ssize_t k = 0; k < run->count; k++) {
        uint64_t key_length = ((uint64_t)value[position] << 8) | value[position + 1];
        uint64_t data_length = ((uint64_t)value[position + 2] << 24)
                               | ((uint64_t)value[position + 3] << 16)
                               | ((uint64_t)value[position + 4] << 8) | value[position + 5];
        const unsigned char *key = value + position + RECORD_HEADER;
        out[0] = 0x0a; /* GetRecordsOutput.records = 1 */
        out = put_varint(out + 1, record_size(run, key_length, data_length));
        out[0] = 0x0a; /* Record.sequence_number = 1 */
        out[1] = (char)run->digits;
        out += 2;
        memcpy(out, digits, (size_t)run->digits);
        out += run->digits;
        memcpy(out, run->arrival, (size_t)run->arrival_length);
        out += run->arrival_length;
        out[0] = 0x1a; /* Record.data = 3 */
        out = put_varint(out + 1, data_length);
        memcpy(out, key + key_length, (size_t)data_length);
        out += data_length;
        out[0] = 0x22; /* Record.partition_key = 4 */
        out = put_varint(out + 1, key_length);
        memcpy(out, key, (size_t)key_length);
        out += key_length;
        memcpy(out, run->encryption, (size_t)run->encryption_length);
        out += run->encryption_length;
        position += RECORD_HEADER + (Py_ssize_t)(key_length + data_length);
        unsigned long long carry = 0;
        for (int i = 0; i < LIMBS; i++) {
            unsigned long long before = number[i];
            number[i] += run->step[i] + carry;
            carry = number[i] / LIMB;
            number[i] %= LIMB;
            if (number[i] != before) {
                put_limb(digits_end - i * LIMB_DIGITS, number[i], limb_width(run->digits, i));
            }
        }
    }
    return out;
}

static PyObject *write_page(PyObject *module, PyObject *args) {
    PyObject *runs_object;
    const char *tail;
    Py_ssize_t tail_length;
    int release_gil = 0;
    (void)module;
    if (!PyArg_ParseTuple(
            args, "Oy#|p:write_page", &runs_object, &tail, &tail_length, &release_gil)) {
        return NULL;
    }
    /* A tuple of the runs, not the caller's list: while the GIL is released, another thread
       could change a list and free a run (and its value) the copy is reading. */
    PyObject *runs = PySequence_Tuple(runs_object);
    if (runs == NULL) {
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(runs);
    run_t *parsed = PyMem_Calloc((size_t)(count ? count : 1), sizeof(run_t));
    PyObject *page = NULL;
    if (parsed == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = tail_length;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (parse_run(PyTuple_GET_ITEM(runs, i), &parsed[i]) < 0) {
            goto done;
        }
        Py_ssize_t run_bytes = run_page_bytes(&parsed[i]);
        if (run_bytes < 0) {
            goto done;
        }
        total += run_bytes;
    }
    page = PyBytes_FromStringAndSize(NULL, total);
    if (page == NULL) {
        goto done;
    }
    char *out = PyBytes_AS_STRING(page);
    PyThreadState *saved = release_gil ? PyEval_SaveThread() : NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        out = write_run(&parsed[i], out);
    }
    memcpy(out, tail, (size_t)tail_length);
    if (saved != NULL) {
        PyEval_RestoreThread(saved);
    }
    assert(out + tail_length == PyBytes_AS_STRING(page) + total);
done:
    PyMem_Free(parsed);
    Py_DECREF(runs);
    return page;
}

static PyMethodDef methods[] = {
    {"write_page", write_page, METH_VARARGS,
     "write_page(runs, tail[, release_gil]) -> bytes: the records fields of the runs, then "
     "tail; with release_gil, the copy runs without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_record_fields",
    "The C writer of GetRecords' gRPC page (see broker/wire/record_fields.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__record_fields(void) {
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddStringConstant(module, "SOURCE_SHA256", SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
