/* tap_sage.sage._wirescan: one pass over a Sage list page, in C, for the tap's fast path.
 *
 * ``scan(page, table, suffix)`` reads a list page (``{"$items": [...], "$total": ...}``) and
 * either gives back every item's JSON text (with ``suffix`` spliced in before its closing
 * brace), the values of the few top-level fields the list reader needs, and the raw texts of
 * the envelope's other members; or ``None``, and the caller goes the ordinary way
 * (``tap_sage.records``: msgspec, then ``wire.Shape.to_record``). It never raises for what a
 * page holds: anything it is not sure of is ``None``.
 *
 * It takes only JSON that the ordinary path would write the same way: compact (no whitespace
 * between tokens), no backslash in an item (escapes only in the envelope's other members, which
 * msgspec then decodes), valid UTF-8, numbers without an exponent (``number``
 * says which fractions), nesting at most ``MAX_DEPTH``. It checks the whole grammar itself, so
 * a page it accepts is well-formed JSON. A key repeated in one object is kept twice (msgspec,
 * and so the ordinary path, keep the last); Sage writes none.
 *
 * ``table`` (``wire.RecordCheck`` builds it from the read schema) names the keys whose values
 * ``Shape.to_record`` may change, by name, at any depth of an item: a name typed a decimal in one
 * place of the schema is held to a decimal's rules everywhere in the item, which can only send
 * more items the ordinary way, never fewer. Entries: [key length][kinds][reader slot][key bytes].
 *
 * Rules per kind (the same as ``wire._record``):
 *   DEC     null, or a string -?[0-9]+(\.[0-9]+)? (what ``wire.decimal_text`` keeps)
 *   DATE    anything but ""
 *   TEXT    anything but a number
 *   DECLIST null, or an array of null and -?[0-9]+(\.[0-9]+)? strings
 *   FORBID  (top level of an item only) absent
 * A reader slot (1..4, top level only) takes a string or null; the item's values come back as a
 * tuple of 4 (None where absent).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define ABI_VERSION 2
#ifndef WIRESCAN_SOURCE /* the hash of this file it was built from (hatch_build.py) */
#define WIRESCAN_SOURCE ""
#endif
#define MAX_DEPTH 64
/* the longest number taken (msgspec refuses integers of over 4300 digits, Python's limit) */
#define MAX_NUMBER 256
#define SLOTS 4
#define TABLE_SIZE 1024 /* open addressing, a power of two; at most TABLE_SIZE / 2 keys */

enum { K_DEC = 1, K_DATE = 2, K_TEXT = 4, K_DECLIST = 8, K_FORBID = 16 };
enum { T_NONE, T_STRING, T_NUMBER, T_LITERAL_NULL, T_LITERAL, T_OBJECT, T_ARRAY };

typedef struct {
    const unsigned char *key;
    Py_ssize_t len;
    unsigned char kinds;
    unsigned char slot;
} Entry;

typedef struct {
    Entry entries[TABLE_SIZE];
} Table;

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    int depth;
    int escapes; /* whether a string may hold escapes (the envelope's members only) */
    const Table *table;
    /* the item being read: its reader slots (start and length of the value, type) */
    const unsigned char *slot_at[SLOTS + 1];
    Py_ssize_t slot_len[SLOTS + 1];
    int slot_type[SLOTS + 1];
} Scan;

/* 1 for a byte that ends the quick run of a string: the quote, the backslash, control
 * characters and every non-ASCII byte (checked as UTF-8) */
static unsigned char STOP[256];

static uint32_t hash(const unsigned char *s, Py_ssize_t n) {
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++) {
        h = (h ^ s[i]) * 16777619u;
    }
    return h;
}

static const Entry *lookup(const Table *t, const unsigned char *key, Py_ssize_t n) {
    uint32_t i = hash(key, n) & (TABLE_SIZE - 1);
    for (;;) {
        const Entry *e = &t->entries[i];
        if (e->key == NULL) return NULL;
        if (e->len == n && memcmp(e->key, key, (size_t)n) == 0) return e;
        i = (i + 1) & (TABLE_SIZE - 1);
    }
}

static int build_table(Table *t, const unsigned char *data, Py_ssize_t size) {
    memset(t, 0, sizeof *t);
    Py_ssize_t count = 0, i = 0;
    while (i < size) {
        if (size - i < 3) return -1;
        Py_ssize_t n = data[i];
        if (n == 0 || size - i - 3 < n) return -1;
        const unsigned char *key = data + i + 3;
        if (++count > TABLE_SIZE / 2) return -1;
        uint32_t h = hash(key, n) & (TABLE_SIZE - 1);
        while (t->entries[h].key != NULL) {
            if (t->entries[h].len == n && memcmp(t->entries[h].key, key, (size_t)n) == 0) return -1;
            h = (h + 1) & (TABLE_SIZE - 1);
        }
        t->entries[h].key = key;
        t->entries[h].len = n;
        t->entries[h].kinds = data[i + 1];
        t->entries[h].slot = data[i + 2];
        if (t->entries[h].slot > SLOTS) return -1;
        i += 3 + n;
    }
    return 0;
}

/* a string at s->p (its opening quote): 0 and the content's start and length, or -1 */
static int string(Scan *s, const unsigned char **start, Py_ssize_t *len) {
    const unsigned char *p = s->p + 1, *end = s->end;
    *start = p;
    for (;;) {
        while (p < end && !STOP[*p]) p++;
        if (p >= end) return -1;
        unsigned char c = *p;
        if (c == '"') break;
        if (c == '\\' && s->escapes) { /* one of JSON's escapes: msgspec decodes it */
            if (end - p < 2) return -1;
            if (p[1] == 'u') {
                if (end - p < 6) return -1;
                for (int i = 2; i < 6; i++) {
                    unsigned char h = p[i] | 0x20; /* ASCII letters to lower case */
                    if (!((p[i] >= '0' && p[i] <= '9') || (h >= 'a' && h <= 'f'))) return -1;
                }
                p += 6;
            } else if (strchr("\"\\/bfnrt", p[1]) != NULL && p[1] != '\0') {
                p += 2;
            } else {
                return -1;
            }
            continue;
        }
        if (c < 0x80) return -1; /* a backslash or a control character */
        /* UTF-8: the shortest form, no surrogate, at most U+10FFFF */
        Py_ssize_t left = end - p;
        if (c >= 0xC2 && c <= 0xDF) {
            if (left < 2 || (p[1] & 0xC0) != 0x80) return -1;
            p += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return -1;
            if (c == 0xE0 && p[1] < 0xA0) return -1;
            if (c == 0xED && p[1] > 0x9F) return -1;
            p += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
                (p[3] & 0xC0) != 0x80)
                return -1;
            if (c == 0xF0 && p[1] < 0x90) return -1;
            if (c == 0xF4 && p[1] > 0x8F) return -1;
            p += 4;
        } else {
            return -1;
        }
    }
    *len = p - *start;
    s->p = p + 1;
    return 0;
}

/* a number the ordinary path writes back as it is: it decodes a fraction as Python's
 * ``Decimal`` and the SDK's writer writes ``str()`` of it, which is the same text unless
 * ``Decimal`` would use an exponent (``0.0000001`` -> ``1E-7``: more than 5 zeros after the point
 * before the first other digit, or more than 6 zeros and nothing else); so no exponent, no
 * -0 (an integer), no leading zero, and fractions of integral part 0 only within that rule */
static int number(Scan *s) {
    const unsigned char *p = s->p, *end = s->end;
    int zero;
    if (end - p > MAX_NUMBER) end = p + MAX_NUMBER + 1; /* a longer one is refused below */
    if (*p == '-') p++;
    if (p >= end || *p < '0' || *p > '9') return -1;
    zero = *p == '0';
    if (zero) {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && *p == '.') {
        const unsigned char *fraction = ++p;
        while (p < end && *p == '0') p++;
        Py_ssize_t zeros = p - fraction;
        int more = p < end && *p >= '1' && *p <= '9';
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == fraction) return -1;
        if (zero && (more ? zeros > 5 : zeros > 6)) return -1;
    } else if (zero && s->p[0] == '-') {
        return -1;
    }
    if (p - s->p > MAX_NUMBER) return -1;
    s->p = p; /* an exponent's letter is then where a comma or a bracket must be: refused */
    return 0;
}

static int literal(Scan *s, const char *word, Py_ssize_t n) {
    if (s->end - s->p < n || memcmp(s->p, word, (size_t)n) != 0) return -1;
    s->p += n;
    return 0;
}

static int value(Scan *s, int top, int *type, const unsigned char **at, Py_ssize_t *len);

/* -?[0-9]+(\.[0-9]+)? */
static int plain_decimal(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t i = 0, digits = 0;
    if (i < n && p[i] == '-') i++;
    while (i < n && p[i] >= '0' && p[i] <= '9') i++, digits++;
    if (digits == 0) return 0;
    if (i == n) return 1;
    if (p[i] != '.') return 0;
    i++;
    digits = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9') i++, digits++;
    return digits > 0 && i == n;
}

/* at a container's opening bracket: steps over it; 1 when an element follows, 0 when it is
 * closed at once by ``close`` (stepped over too) */
static int opened(Scan *s, unsigned char close) {
    s->p++;
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 0;
    }
    return 1;
}

/* after a container's element: 1 when another follows (a comma, stepped over), 0 at ``close``
 * (stepped over), -1 at anything else */
static int following(Scan *s, unsigned char close) {
    if (s->p >= s->end) return -1;
    if (*s->p == ',') {
        s->p++;
        return 1;
    }
    if (*s->p == close) {
        s->p++;
        return 0;
    }
    return -1;
}

/* an object member's key and its colon: 0 and the key, or -1 */
static int member_key(Scan *s, const unsigned char **key, Py_ssize_t *n) {
    if (s->p >= s->end || *s->p != '"' || string(s, key, n) < 0) return -1;
    if (s->p >= s->end || *s->p != ':') return -1;
    s->p++;
    return 0;
}

/* an array of decimals (DECLIST) at s->p ('['): 0 when every element is null or plain */
static int decimal_list(Scan *s) {
    for (int more = opened(s, ']'); more; more = following(s, ']')) {
        if (more < 0 || s->p >= s->end) return -1;
        if (*s->p == 'n') {
            if (literal(s, "null", 4) < 0) return -1;
        } else if (*s->p == '"') {
            const unsigned char *at;
            Py_ssize_t len;
            if (string(s, &at, &len) < 0 || !plain_decimal(at, len)) return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

/* a member's value under the rules of its key's entry (NULL: none) */
static int member(Scan *s, const Entry *e, int top) {
    int type;
    const unsigned char *at = NULL;
    Py_ssize_t len = 0;
    unsigned char kinds = e == NULL ? 0 : e->kinds;
    if (top && (kinds & K_FORBID)) return -1;
    if (kinds & K_DECLIST) {
        if (s->p >= s->end) return -1;
        if (*s->p == 'n') {
            if (literal(s, "null", 4) < 0) return -1;
            type = T_LITERAL_NULL;
        } else if (*s->p == '[') {
            if (decimal_list(s) < 0) return -1;
            type = T_ARRAY;
        } else {
            return -1;
        }
    } else if (value(s, 0, &type, &at, &len) < 0) {
        return -1;
    }
    if ((kinds & K_DEC) && !(type == T_LITERAL_NULL || (type == T_STRING && plain_decimal(at, len))))
        return -1;
    if ((kinds & K_DATE) && type == T_STRING && len == 0) return -1;
    if ((kinds & K_TEXT) && type == T_NUMBER) return -1;
    if (top && e != NULL && e->slot) {
        if (type != T_STRING && type != T_LITERAL_NULL) return -1;
        s->slot_at[e->slot] = at;
        s->slot_len[e->slot] = len;
        s->slot_type[e->slot] = type;
    }
    return 0;
}

/* an object at s->p ('{'); ``top``: an item's own members (reader slots, FORBID) */
static int object(Scan *s, int top) {
    if (++s->depth > MAX_DEPTH) return -1;
    for (int more = opened(s, '}'); more; more = following(s, '}')) {
        const unsigned char *key;
        Py_ssize_t n;
        if (more < 0 || member_key(s, &key, &n) < 0) return -1;
        const Entry *e = s->table == NULL ? NULL : lookup(s->table, key, n);
        if (member(s, e, top) < 0) return -1;
    }
    s->depth--;
    return 0;
}

static int array(Scan *s) {
    if (++s->depth > MAX_DEPTH) return -1;
    for (int more = opened(s, ']'); more; more = following(s, ']')) {
        int type;
        const unsigned char *at;
        Py_ssize_t len;
        if (more < 0 || value(s, 0, &type, &at, &len) < 0) return -1;
    }
    s->depth--;
    return 0;
}

static int value(Scan *s, int top, int *type, const unsigned char **at, Py_ssize_t *len) {
    if (s->p >= s->end) return -1;
    switch (*s->p) {
    case '"':
        *type = T_STRING;
        return string(s, at, len);
    case '{':
        *type = T_OBJECT;
        return object(s, top);
    case '[':
        *type = T_ARRAY;
        return array(s);
    case 'n':
        *type = T_LITERAL_NULL;
        return literal(s, "null", 4);
    case 't':
        *type = T_LITERAL;
        return literal(s, "true", 4);
    case 'f':
        *type = T_LITERAL;
        return literal(s, "false", 5);
    default:
        *type = T_NUMBER;
        return number(s);
    }
}

/* the item's reader values as a tuple of SLOTS (a new reference), NULL with an error set */
static PyObject *slots(Scan *s) {
    PyObject *out = PyTuple_New(SLOTS);
    if (out == NULL) return NULL;
    for (int i = 1; i <= SLOTS; i++) {
        PyObject *v;
        if (s->slot_type[i] == T_STRING) {
            v = PyUnicode_DecodeUTF8((const char *)s->slot_at[i], s->slot_len[i], "strict");
            if (v == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        } else {
            v = Py_None;
            Py_INCREF(v);
        }
        PyTuple_SET_ITEM(out, i - 1, v);
    }
    return out;
}

/* an item's text, with ``suffix`` before its closing brace (a comma first unless it is {}) */
static PyObject *item_text(const unsigned char *start, Py_ssize_t n, const char *suffix,
                           Py_ssize_t suffix_len) {
    if (suffix == NULL) return PyBytes_FromStringAndSize((const char *)start, n);
    int comma = n > 2;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n + comma + suffix_len);
    if (out == NULL) return NULL;
    char *dst = PyBytes_AS_STRING(out);
    memcpy(dst, start, (size_t)(n - 1));
    dst += n - 1;
    if (comma) *dst++ = ',';
    memcpy(dst, suffix, (size_t)suffix_len);
    dst[suffix_len] = '}';
    return out;
}

/* the $items array at s->p: appends each item's text and reader values; -1: not for the fast
 * path; -2: a Python error */
static int items(Scan *s, PyObject *texts, PyObject *values, const char *suffix,
                 Py_ssize_t suffix_len) {
    if (s->p >= s->end || *s->p != '[') return -1;
    s->depth++;
    for (int more = opened(s, ']'); more; more = following(s, ']')) {
        if (more < 0 || s->p >= s->end || *s->p != '{') return -1;
        for (int i = 0; i <= SLOTS; i++) s->slot_type[i] = T_NONE;
        const unsigned char *start = s->p;
        if (object(s, 1) < 0) return -1;
        PyObject *text = item_text(start, s->p - start, suffix, suffix_len);
        if (text == NULL) return -2;
        int failed = PyList_Append(texts, text);
        Py_DECREF(text);
        if (failed) return -2;
        PyObject *meta = slots(s);
        if (meta == NULL) return -2;
        failed = PyList_Append(values, meta);
        Py_DECREF(meta);
        if (failed) return -2;
    }
    s->depth--;
    return 0;
}

static PyObject *page(Scan *s, const char *suffix, Py_ssize_t suffix_len) {
    PyObject *texts = PyList_New(0), *values = PyList_New(0), *members = PyList_New(0);
    PyObject *result = NULL;
    int seen_items = 0;
    if (texts == NULL || values == NULL || members == NULL) goto done;
    if (s->p >= s->end || *s->p != '{') goto refuse;
    s->depth = 1;
    for (int more = opened(s, '}'); more; more = following(s, '}')) {
        const unsigned char *key;
        Py_ssize_t n;
        if (more < 0 || member_key(s, &key, &n) < 0) goto refuse;
        if (n == 6 && memcmp(key, "$items", 6) == 0) {
            if (seen_items++) goto refuse;
            int r = items(s, texts, values, suffix, suffix_len);
            if (r == -2) goto done;
            if (r < 0) goto refuse;
        } else {
            const Table *table = s->table;
            s->table = NULL; /* the envelope's other members: no rules, and escapes taken (Sage
                              * writes ``&`` in ``$next`` as ``\u0026``, recorded/products_...) */
            s->escapes = 1;
            int type;
            const unsigned char *at, *start = s->p;
            Py_ssize_t len;
            int r = value(s, 0, &type, &at, &len);
            s->table = table;
            s->escapes = 0;
            if (r < 0) goto refuse;
            PyObject *pair = Py_BuildValue("(y#y#)", key, n, start, (Py_ssize_t)(s->p - start));
            if (pair == NULL) goto done;
            r = PyList_Append(members, pair);
            Py_DECREF(pair);
            if (r) goto done;
        }
    }
    if (s->p != s->end) goto refuse;
    result = Py_BuildValue("(OOO)", texts, values, members);
    goto done;
refuse:
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(texts);
    Py_XDECREF(values);
    Py_XDECREF(members);
    return result;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer content, table_bytes;
    PyObject *suffix_obj;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O:scan", &content, &table_bytes, &suffix_obj)) return NULL;
    PyObject *result = NULL;
    const char *suffix = NULL;
    Py_ssize_t suffix_len = 0;
    Table *table = NULL;
    if (suffix_obj != Py_None) {
        if (!PyBytes_Check(suffix_obj)) {
            PyErr_SetString(PyExc_TypeError, "scan: suffix must be bytes or None");
            goto out;
        }
        suffix = PyBytes_AS_STRING(suffix_obj);
        suffix_len = PyBytes_GET_SIZE(suffix_obj);
    }
    table = PyMem_Malloc(sizeof *table);
    if (table == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    if (build_table(table, table_bytes.buf, table_bytes.len) < 0) {
        PyErr_SetString(PyExc_ValueError, "scan: a malformed key table");
        goto out;
    }
    Scan s;
    memset(&s, 0, sizeof s);
    s.p = content.buf;
    s.end = s.p + content.len;
    s.table = table;
    result = page(&s, suffix, suffix_len);
out:
    PyMem_Free(table);
    PyBuffer_Release(&content);
    PyBuffer_Release(&table_bytes);
    return result;
}

static PyMethodDef METHODS[] = {
    {"scan", scan, METH_VARARGS,
     "scan(page, table, suffix) -> (texts, reader values, other members) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_wirescan", "One pass over a Sage list page (tap_sage.records).",
    -1, METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__wirescan(void) {
    for (int c = 0; c < 256; c++) STOP[c] = (c == '"' || c == '\\' || c < 0x20 || c >= 0x80);
    PyObject *m = PyModule_Create(&MODULE);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "ABI_VERSION", ABI_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "SLOTS", SLOTS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_KEYS", TABLE_SIZE / 2) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE", WIRESCAN_SOURCE) < 0 ||
        PyModule_AddIntConstant(m, "DEC", K_DEC) < 0 ||
        PyModule_AddIntConstant(m, "DATE", K_DATE) < 0 ||
        PyModule_AddIntConstant(m, "TEXT", K_TEXT) < 0 ||
        PyModule_AddIntConstant(m, "DECLIST", K_DECLIST) < 0 ||
        PyModule_AddIntConstant(m, "FORBID", K_FORBID) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
