/*
 * The optional C reader of PutRecords' entries straight from a serialized PutRecordsInput
 * (broker/wire/put_entries.py holds the contract; broker/compiled.py loads this module). The
 * request was parsed by upb before (so it is a well-formed message with valid UTF-8); this
 * reads only the common entry, the one the doors' fast path takes: exactly one `data` (field 1,
 * 1 byte up to data_max) and one `partition_key` (field 3, key_min..key_max characters), no
 * other field. Anything else gives None and the caller reads the message through upb.
 *
 * read(raw, key_min, key_max, data_max, count_min, count_max) ->
 *     (partition_keys, partition_keys_utf8, datas, sizes) | None
 *
 * Four lists in request order: the keys as str and as their UTF-8 bytes, the data, and each
 * record's size (UTF-8 key length + data length). None when an entry is not the common one or
 * the number of entries (field 1 of PutRecordsInput) lies outside count_min..count_max. Other
 * fields of PutRecordsInput are skipped (the caller reads them from the parsed message).
 *
 * read_json(records, key_min, key_max, count_min, count_max) ->
 *     (partition_keys, partition_keys_utf8, data_texts) | None
 *
 * The same for the AWS door's JSON body: `records` is its "Records" list as parsed, each
 * common entry an object of exactly "Data" (a string: its base64, decoded by the caller) and
 * "PartitionKey" (a string of key_min..key_max characters). None otherwise.
 *
 * split_base64(decoded, texts) -> list[bytes] | None
 *
 * The bytes of each base64 text of `texts` (a list of str), given `decoded`: the decode of the
 * texts joined with every "=" turned into "A". None when any text is not canonical base64 (a
 * length that is not a multiple of 4, padding before the end or after a character whose
 * unused bits are not zero) or `decoded` is not that decode's length. broker/gateway/
 * aws_codec.py's `canonical_blobs` holds the Python loop with the same results.
 *
 * read_json_body(body, key_min, key_max, data_max, count_min, count_max) ->
 *     (members, partition_keys, partition_keys_utf8, base64, data_sizes, sizes) | None
 *
 * The AWS door's whole JSON PutRecords body (bytes, not parsed yet) read in one pass, without
 * building a Python object per JSON value: for the common body only, a top-level object whose
 * "Records" (once) is an array of count_min..count_max common entries, each an object of
 * exactly "Data" (canonical base64, see split_base64, of 1..data_max bytes decoded) and
 * "PartitionKey" (key_min..key_max characters), in either order, and whose every other member
 * is a string. Every name and
 * string but Data must be printable ASCII without escapes (what the SDKs send for these
 * members); anything else (an escape, a non-ASCII or control character, a number, a nested
 * value, a repeated "Records", trailing bytes) gives None and the caller parses the body as
 * before, which keeps every error and its words. `members` maps each top-level name to its string in the body's order (a
 * repeated one keeps its first place and its last value, as a JSON parser's dict does), with
 * "Records" mapped to None; `base64` is every entry's Data joined, each one's final padding
 * turned into "A" (so one base64 call decodes them all), `data_sizes` each entry's decoded
 * length and `sizes` each record's size (key length + decoded length, as `read` gives them).
 * The Data strings' characters are checked by that call, not here: the caller must decode
 * `base64` validating its alphabet (a "=" only at the very end, which `base64` never has), and
 * take the body as not common when that fails (a Data with an escape, a control or a non-ASCII
 * character, or a "=" before its final padding fails it).
 *
 * cut_blobs(decoded, data_sizes) -> list[bytes] | None
 *
 * The blobs of `decoded` (the decode of read_json_body's `base64`): entry i's bytes start where
 * the previous entry's 3-byte groups end. None when `decoded` is not their total length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifndef SOURCE_SHA256
#define SOURCE_SHA256 ""
#endif

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LENGTH = 2, WIRE_FIXED32 = 5 };

/* A varint at *at (below end) into *value; 0 when it runs past end or over ten bytes. */
static int read_varint(const unsigned char **at, const unsigned char *end, uint64_t *value) {
    uint64_t result = 0;
    for (int shift = 0; shift < 70 && *at < end; shift += 7) {
        unsigned char byte = *(*at)++;
        result |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *value = result;
            return 1;
        }
    }
    return 0;
}

/* A length-delimited field's bounds; 0 when its length runs past end. */
static int read_length(const unsigned char **at, const unsigned char *end,
                       const unsigned char **start, Py_ssize_t *length) {
    uint64_t size;
    if (!read_varint(at, end, &size) || size > (uint64_t)(end - *at)) {
        return 0;
    }
    *start = *at;
    *length = (Py_ssize_t)size;
    *at += size;
    return 1;
}

/* Steps over a field of `wire_type`; 0 for a group or anything malformed. */
static int skip_field(const unsigned char **at, const unsigned char *end, uint64_t wire_type) {
    uint64_t ignored;
    const unsigned char *start;
    Py_ssize_t length;
    switch (wire_type) {
    case WIRE_VARINT:
        return read_varint(at, end, &ignored);
    case WIRE_FIXED64:
        if (end - *at < 8) {
            return 0;
        }
        *at += 8;
        return 1;
    case WIRE_LENGTH:
        return read_length(at, end, &start, &length);
    case WIRE_FIXED32:
        if (end - *at < 4) {
            return 0;
        }
        *at += 4;
        return 1;
    default:
        return 0;
    }
}

typedef struct {
    Py_ssize_t key_min, key_max, data_max;
    PyObject *keys, *keys_utf8, *datas, *sizes;
} Columns;

/* Appends one entry's columns: 1 when appended, 0 when it is not the common entry, -1 on a
 * Python error. */
static int read_entry(const unsigned char *at, const unsigned char *end, Columns *columns) {
    const unsigned char *data = NULL, *key = NULL;
    Py_ssize_t data_length = 0, key_length = 0;
    while (at < end) {
        uint64_t tag;
        if (!read_varint(&at, end, &tag)) {
            return 0;
        }
        if (tag == ((1 << 3) | WIRE_LENGTH) && data == NULL) {
            if (!read_length(&at, end, &data, &data_length)) {
                return 0;
            }
        } else if (tag == ((3 << 3) | WIRE_LENGTH) && key == NULL) {
            if (!read_length(&at, end, &key, &key_length)) {
                return 0;
            }
        } else {
            return 0; /* an explicit hash key, a repeated or unknown field */
        }
    }
    if (data == NULL || key == NULL || data_length < 1 || data_length > columns->data_max) {
        return 0;
    }
    PyObject *key_text = PyUnicode_DecodeUTF8((const char *)key, key_length, "strict");
    if (key_text == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            return -1;
        }
        PyErr_Clear(); /* upb checked it already; the generic path says what is wrong */
        return 0;
    }
    Py_ssize_t characters = PyUnicode_GET_LENGTH(key_text);
    if (characters < columns->key_min || characters > columns->key_max) {
        Py_DECREF(key_text);
        return 0;
    }
    int failed = PyList_Append(columns->keys, key_text) < 0;
    Py_DECREF(key_text);
    PyObject *made = failed ? NULL : PyBytes_FromStringAndSize((const char *)key, key_length);
    failed = made == NULL || PyList_Append(columns->keys_utf8, made) < 0;
    Py_XDECREF(made);
    made = failed ? NULL : PyBytes_FromStringAndSize((const char *)data, data_length);
    failed = made == NULL || PyList_Append(columns->datas, made) < 0;
    Py_XDECREF(made);
    made = failed ? NULL : PyLong_FromSsize_t(key_length + data_length);
    failed = made == NULL || PyList_Append(columns->sizes, made) < 0;
    Py_XDECREF(made);
    return failed ? -1 : 1;
}

static PyObject *read_columns(PyObject *module, PyObject *args) {
    const unsigned char *raw;
    Py_ssize_t raw_length, count_min, count_max;
    Columns columns = {0};
    (void)module;
    if (!PyArg_ParseTuple(args, "y#nnnnn:read", &raw, &raw_length, &columns.key_min,
                          &columns.key_max, &columns.data_max, &count_min, &count_max)) {
        return NULL;
    }
    columns.keys = PyList_New(0);
    columns.keys_utf8 = PyList_New(0);
    columns.datas = PyList_New(0);
    columns.sizes = PyList_New(0);
    PyObject *result = NULL;
    if (columns.keys == NULL || columns.keys_utf8 == NULL || columns.datas == NULL
        || columns.sizes == NULL) {
        goto done;
    }
    const unsigned char *at = raw, *end = raw + raw_length;
    Py_ssize_t count = 0;
    while (at < end) {
        uint64_t tag;
        if (!read_varint(&at, end, &tag)) {
            goto not_common;
        }
        if (tag == ((1 << 3) | WIRE_LENGTH)) {
            const unsigned char *entry;
            Py_ssize_t entry_length;
            if (!read_length(&at, end, &entry, &entry_length) || ++count > count_max) {
                goto not_common;
            }
            int read = read_entry(entry, entry + entry_length, &columns);
            if (read < 0) {
                goto done;
            }
            if (read == 0) {
                goto not_common;
            }
        } else if ((tag >> 3) == 1 || !skip_field(&at, end, tag & 7)) {
            goto not_common;
        }
    }
    if (count < count_min) {
        goto not_common;
    }
    result = PyTuple_Pack(4, columns.keys, columns.keys_utf8, columns.datas, columns.sizes);
    goto done;
not_common:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(columns.keys);
    Py_XDECREF(columns.keys_utf8);
    Py_XDECREF(columns.datas);
    Py_XDECREF(columns.sizes);
    return result;
}

static PyObject *data_name, *key_name; /* "Data", "PartitionKey": kept for good */

/* The AWS door's JSON body: its "Records" list as orjson made it. */
static PyObject *read_json_columns(PyObject *module, PyObject *args) {
    PyObject *records;
    Py_ssize_t key_min, key_max, count_min, count_max;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!nnnn:read_json", &PyList_Type, &records, &key_min, &key_max,
                          &count_min, &count_max)) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(records);
    if (count < count_min || count > count_max) {
        Py_RETURN_NONE;
    }
    PyObject *keys = PyList_New(count), *keys_utf8 = PyList_New(count), *texts = PyList_New(count);
    PyObject *result = NULL;
    if (keys == NULL || keys_utf8 == NULL || texts == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(records, i);
        if (!PyDict_CheckExact(item) || PyDict_GET_SIZE(item) != 2) {
            goto not_common;
        }
        PyObject *text = PyDict_GetItemWithError(item, data_name); /* borrowed */
        PyObject *key = text == NULL ? NULL : PyDict_GetItemWithError(item, key_name);
        if (key == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            goto not_common;
        }
        if (!PyUnicode_CheckExact(text) || !PyUnicode_CheckExact(key)) {
            goto not_common;
        }
        Py_ssize_t characters = PyUnicode_GET_LENGTH(key);
        if (characters < key_min || characters > key_max) {
            goto not_common;
        }
        PyObject *utf8 = PyUnicode_AsUTF8String(key);
        if (utf8 == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
                goto done;
            }
            PyErr_Clear(); /* a lone surrogate: the generic path says what is wrong */
            goto not_common;
        }
        PyList_SET_ITEM(keys_utf8, i, utf8);
        PyList_SET_ITEM(keys, i, Py_NewRef(key));
        PyList_SET_ITEM(texts, i, Py_NewRef(text));
    }
    result = PyTuple_Pack(3, keys, keys_utf8, texts);
    goto done;
not_common:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(keys);
    Py_XDECREF(keys_utf8);
    Py_XDECREF(texts);
    return result;
}

/* Whether `c` may stand before "==" (two data bits, then four zero bits) or before "=" (four
 * data bits, then two zero bits) in canonical base64. */
static int canonical_before_two_pads(unsigned char c) {
    return c == 'A' || c == 'Q' || c == 'g' || c == 'w';
}

static int canonical_before_one_pad(unsigned char c) {
    return c != 0 && strchr("AEIMQUYcgkosw048", c) != NULL;
}

/* The AWS door's blobs: `decoded` is the base64 decode of `texts` joined with every "=" made
 * "A" (so each text decodes to its bytes then as many zero bytes as it had pads). */
static PyObject *split_base64(PyObject *module, PyObject *args) {
    const char *decoded;
    Py_ssize_t decoded_length;
    PyObject *texts;
    (void)module;
    if (!PyArg_ParseTuple(args, "y#O!:split_base64", &decoded, &decoded_length, &PyList_Type,
                          &texts)) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(texts), start = 0;
    PyObject *blobs = PyList_New(count);
    if (blobs == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *text = PyList_GET_ITEM(texts, i);
        if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) {
            goto not_canonical;
        }
        Py_ssize_t length = PyUnicode_GET_LENGTH(text), pads = 0;
        const unsigned char *chars = PyUnicode_1BYTE_DATA(text);
        if (length % 4) {
            goto not_canonical;
        }
        if (length && chars[length - 1] == '=') {
            if (chars[length - 2] == '=') {
                if (!canonical_before_two_pads(chars[length - 3])) {
                    goto not_canonical;
                }
                pads = 2;
            } else if (canonical_before_one_pad(chars[length - 2])) {
                pads = 1;
            } else {
                goto not_canonical;
            }
        }
        if (memchr(chars, '=', (size_t)(length - pads)) != NULL) {
            goto not_canonical; /* padding before the end */
        }
        Py_ssize_t stride = length / 4 * 3;
        if (stride > decoded_length - start) {
            goto not_canonical;
        }
        PyObject *blob = PyBytes_FromStringAndSize(decoded + start, stride - pads);
        if (blob == NULL) {
            Py_DECREF(blobs);
            return NULL;
        }
        PyList_SET_ITEM(blobs, i, blob);
        start += stride;
    }
    if (start != decoded_length) {
        goto not_canonical;
    }
    return blobs;
not_canonical:
    Py_DECREF(blobs);
    Py_RETURN_NONE;
}

/* --- read_json_body: the JSON body's common PutRecords, without a parser's objects --------- */

typedef struct {
    const unsigned char *at, *end;
} Cursor;

static void skip_space(Cursor *c) {
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r')) {
        c->at++;
    }
}

/* The next byte after any whitespace is `expected`: consumed, 1; else 0. */
static int take(Cursor *c, unsigned char expected) {
    skip_space(c);
    if (c->at < c->end && *c->at == expected) {
        c->at++;
        return 1;
    }
    return 0;
}

/* A string of printable ASCII without escapes: its characters' bounds, cursor past its end
 * quote; 0 for anything else (the caller's generic parser then decides). */
static int plain_string(Cursor *c, const unsigned char **start, Py_ssize_t *length) {
    if (!take(c, '"')) {
        return 0;
    }
    const unsigned char *first = c->at;
    while (c->at < c->end && *c->at != '"') {
        unsigned char byte = *c->at;
        if (byte < 0x20 || byte > 0x7e || byte == '\\') {
            return 0;
        }
        c->at++;
    }
    if (c->at == c->end) {
        return 0;
    }
    *start = first;
    *length = c->at - first;
    c->at++;
    return 1;
}

static int is_name(const unsigned char *start, Py_ssize_t length, const char *name) {
    return (size_t)length == strlen(name) && memcmp(start, name, (size_t)length) == 0;
}

/* A Data string copied to *out with its padding as "A", its decoded size in *size, when its
 * length and final padding are canonical base64's (split_base64's checks). Its other characters
 * are not looked at here: the caller's base64 decode of everything copied (validating) refuses
 * any outside base64's alphabet, an escape's backslash, a control character or a "=" before the
 * end included. 0 when it is not so. memchr and memcpy run a word or a vector at a time; a byte loop here cost more
 * than the whole parse it replaces. */
static int data_text(Cursor *c, unsigned char **out, Py_ssize_t *size) {
    if (!take(c, '"')) {
        return 0;
    }
    const unsigned char *chars = c->at;
    const unsigned char *quote = memchr(chars, '"', (size_t)(c->end - chars));
    if (quote == NULL) {
        return 0;
    }
    Py_ssize_t length = quote - chars, pads = 0;
    if (length % 4) {
        return 0;
    }
    if (length && chars[length - 1] == '=') {
        if (chars[length - 2] == '=') {
            if (!canonical_before_two_pads(chars[length - 3])) {
                return 0;
            }
            pads = 2;
        } else if (canonical_before_one_pad(chars[length - 2])) {
            pads = 1;
        } else {
            return 0;
        }
    }
    /* A "=" before the padding is left as it is: "=" is only valid at the very end of the
     * joined text, which ends with "A"s or a character other than "=", so the caller's
     * validating decode refuses it (one pass less over the data than looking for it here). */
    memcpy(*out, chars, (size_t)(length - pads));
    memset(*out + length - pads, 'A', (size_t)pads);
    *out += length;
    *size = length / 4 * 3 - pads;
    c->at = quote + 1;
    return 1;
}

typedef struct {
    PyObject *keys, *keys_utf8, *data_sizes, *sizes; /* lists */
    unsigned char *out;                              /* the next byte of the joined base64 */
    Py_ssize_t data_max;                             /* an entry's decoded Data at most */
} JsonColumns;

/* One common entry {"Data": ..., "PartitionKey": ...} (either order) into the columns: 1; 0 when
 * it is not one; -1 with an exception set. */
static int json_entry(Cursor *c, JsonColumns *columns, Py_ssize_t key_min, Py_ssize_t key_max) {
    int seen_data = 0, seen_key = 0;
    const unsigned char *key = NULL;
    Py_ssize_t key_length = 0, size = 0;
    if (!take(c, '{')) {
        return 0;
    }
    for (int member = 0; member < 2; member++) {
        const unsigned char *name;
        Py_ssize_t name_length;
        if ((member && !take(c, ',')) || !plain_string(c, &name, &name_length) || !take(c, ':')) {
            return 0;
        }
        if (!seen_data && is_name(name, name_length, "Data")) {
            seen_data = 1;
            if (!data_text(c, &columns->out, &size)) {
                return 0;
            }
        } else if (!seen_key && is_name(name, name_length, "PartitionKey")) {
            seen_key = 1;
            if (!plain_string(c, &key, &key_length)) {
                return 0;
            }
        } else {
            return 0;
        }
    }
    if (!take(c, '}') || key_length < key_min || key_length > key_max || size < 1
        || size > columns->data_max) {
        return 0; /* ASCII: characters and UTF-8 bytes are the same count */
    }
    PyObject *text = PyUnicode_DecodeASCII((const char *)key, key_length, NULL);
    PyObject *utf8 = PyBytes_FromStringAndSize((const char *)key, key_length);
    PyObject *data_size = PyLong_FromSsize_t(size);
    PyObject *record_size = PyLong_FromSsize_t(key_length + size);
    int failed = text == NULL || utf8 == NULL || data_size == NULL || record_size == NULL
                 || PyList_Append(columns->keys, text) < 0
                 || PyList_Append(columns->keys_utf8, utf8) < 0
                 || PyList_Append(columns->data_sizes, data_size) < 0
                 || PyList_Append(columns->sizes, record_size) < 0;
    Py_XDECREF(text);
    Py_XDECREF(utf8);
    Py_XDECREF(data_size);
    Py_XDECREF(record_size);
    return failed ? -1 : 1;
}

/* The "Records" array: 1 when every entry is common and their count is within bounds. */
static int json_records(Cursor *c, JsonColumns *columns, Py_ssize_t key_min, Py_ssize_t key_max,
                        Py_ssize_t count_max) {
    if (!take(c, '[')) {
        return 0;
    }
    if (take(c, ']')) {
        return 1; /* empty: the count check refuses it */
    }
    for (Py_ssize_t count = 0;; count++) { /* bounded: each pass consumes an entry's bytes */
        if (count >= count_max) {
            return 0;
        }
        int read = json_entry(c, columns, key_min, key_max);
        if (read != 1) {
            return read;
        }
        if (take(c, ']')) {
            return 1;
        }
        if (!take(c, ',')) {
            return 0;
        }
    }
}

static PyObject *read_json_body(PyObject *module, PyObject *args) {
    const char *body;
    Py_ssize_t body_length, key_min, key_max, data_max, count_min, count_max;
    (void)module;
    if (!PyArg_ParseTuple(args, "y#nnnnn:read_json_body", &body, &body_length, &key_min,
                          &key_max, &data_max, &count_min, &count_max)) {
        return NULL;
    }
    Cursor c = {(const unsigned char *)body, (const unsigned char *)body + body_length};
    PyObject *members = PyDict_New(), *joined = PyBytes_FromStringAndSize(NULL, body_length);
    JsonColumns columns = {PyList_New(0), PyList_New(0), PyList_New(0), PyList_New(0), NULL,
                           data_max};
    PyObject *result = NULL;
    int seen_records = 0;
    if (members == NULL || joined == NULL || columns.keys == NULL || columns.keys_utf8 == NULL
        || columns.data_sizes == NULL || columns.sizes == NULL) {
        goto done;
    }
    columns.out = (unsigned char *)PyBytes_AS_STRING(joined);
    if (!take(&c, '{')) {
        goto not_common;
    }
    for (int first = 1;; first = 0) { /* bounded: each pass consumes a member's bytes */
        const unsigned char *name;
        Py_ssize_t name_length;
        if (first && take(&c, '}')) {
            break;
        }
        if ((!first && !take(&c, ',')) || !plain_string(&c, &name, &name_length)
            || !take(&c, ':')) {
            goto not_common;
        }
        PyObject *key = PyUnicode_DecodeASCII((const char *)name, name_length, NULL), *value;
        if (key == NULL) {
            goto done;
        }
        if (is_name(name, name_length, "Records")) {
            int read = seen_records ? 0 : json_records(&c, &columns, key_min, key_max, count_max);
            seen_records = 1;
            if (read != 1) {
                Py_DECREF(key);
                if (read < 0) {
                    goto done;
                }
                goto not_common;
            }
            value = Py_NewRef(Py_None);
        } else {
            const unsigned char *start;
            Py_ssize_t length;
            if (!plain_string(&c, &start, &length)) {
                Py_DECREF(key);
                goto not_common;
            }
            value = PyUnicode_DecodeASCII((const char *)start, length, NULL);
        }
        int failed = value == NULL || PyDict_SetItem(members, key, value) < 0;
        Py_DECREF(key);
        Py_XDECREF(value);
        if (failed) {
            goto done;
        }
        if (take(&c, '}')) {
            break;
        }
    }
    skip_space(&c);
    Py_ssize_t count = PyList_GET_SIZE(columns.keys);
    if (c.at != c.end || !seen_records || count < count_min) {
        goto not_common;
    }
    if (_PyBytes_Resize(&joined, (char *)columns.out - PyBytes_AS_STRING(joined)) < 0) {
        goto done; /* joined is NULL now */
    }
    result = PyTuple_Pack(6, members, columns.keys, columns.keys_utf8, joined, columns.data_sizes,
                          columns.sizes);
    goto done;
not_common:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(members);
    Py_XDECREF(joined);
    Py_XDECREF(columns.keys);
    Py_XDECREF(columns.keys_utf8);
    Py_XDECREF(columns.data_sizes);
    Py_XDECREF(columns.sizes);
    return result;
}

static PyObject *cut_blobs(PyObject *module, PyObject *args) {
    const char *decoded;
    Py_ssize_t decoded_length, start = 0;
    PyObject *sizes;
    (void)module;
    if (!PyArg_ParseTuple(args, "y#O!:cut_blobs", &decoded, &decoded_length, &PyList_Type,
                          &sizes)) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(sizes);
    PyObject *blobs = PyList_New(count);
    if (blobs == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size = PyLong_AsSsize_t(PyList_GET_ITEM(sizes, i));
        if (size < 0) {
            Py_DECREF(blobs);
            if (PyErr_Occurred()) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        Py_ssize_t stride = (size + 2) / 3 * 3; /* the entry's whole 3-byte groups */
        if (stride > decoded_length - start) {
            Py_DECREF(blobs);
            Py_RETURN_NONE;
        }
        PyObject *blob = PyBytes_FromStringAndSize(decoded + start, size);
        if (blob == NULL) {
            Py_DECREF(blobs);
            return NULL;
        }
        PyList_SET_ITEM(blobs, i, blob);
        start += stride;
    }
    if (start != decoded_length) {
        Py_DECREF(blobs);
        Py_RETURN_NONE;
    }
    return blobs;
}

static PyMethodDef methods[] = {
    {"read", read_columns, METH_VARARGS,
     "read(raw, key_min, key_max, data_max, count_min, count_max) -> "
     "(partition_keys, partition_keys_utf8, datas, sizes) | None"},
    {"read_json", read_json_columns, METH_VARARGS,
     "read_json(records, key_min, key_max, count_min, count_max) -> "
     "(partition_keys, partition_keys_utf8, data_texts) | None"},
    {"split_base64", split_base64, METH_VARARGS,
     "split_base64(decoded, texts) -> list[bytes] | None"},
    {"read_json_body", read_json_body, METH_VARARGS,
     "read_json_body(body, key_min, key_max, data_max, count_min, count_max) -> "
     "(members, partition_keys, partition_keys_utf8, base64, data_sizes, sizes) | None"},
    {"cut_blobs", cut_blobs, METH_VARARGS, "cut_blobs(decoded, data_sizes) -> list[bytes] | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_put_entries",
    "The C reader of PutRecords' common entries (see broker/wire/put_entries.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__put_entries(void) {
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL) {
        return NULL;
    }
    data_name = PyUnicode_InternFromString("Data");
    key_name = PyUnicode_InternFromString("PartitionKey");
    if (data_name == NULL || key_name == NULL
        || PyModule_AddStringConstant(module, "SOURCE_SHA256", SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
