/*
 * The optional C walk of a stored batch's record lengths (broker/log/records.py holds the
 * contract and the Python walk with the same results; broker/compiled.py loads this module).
 *
 * The payload is count x (pk_len u16 | data_len u32 | partition key | data), big-endian.
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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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

static PyMethodDef methods[] = {
    {"skip", skip, METH_VARARGS, "skip(value, position, count) -> position"},
    {"take", take, METH_VARARGS,
     "take(value, position, index, stop, room, taken_bytes, bytes_max, first_taken) -> "
     "(position, index, run_bytes, capped)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_record_walk",
    "The C walk of a stored batch's record lengths (see broker/log/records.py).", -1, methods,
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
    if (layout_error == NULL
        || PyModule_AddStringConstant(module, "SOURCE_SHA256", SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
