/*
 * funnelsim._cohort: the repeat purchases of one replication's existing customers
 * (BG/NBD or Pareto/NBD, Gamma-Gamma spend), customer by customer, in C.
 *
 * The same model as funnelsim/customers.py simulates for new customers with NumPy (see
 * there for the references); here each customer is walked in order: alive (given its
 * history), the first repeat purchase after a Lomax time (so the purchase rate is drawn only
 * for customers who buy), then exponential gaps at rate lambda ~ Gamma(shape + 1, rate +
 * first wait) until the horizon, the end of a Pareto/NBD lifetime, or the J-th purchase of a
 * BG/NBD customer (J beta-geometric: geometric given p ~ Beta(a, b + x)). Purchases are
 * booked straight into their period, so nothing per purchase is stored, and the spend of a
 * customer's purchases in one period is one Gamma(n p) draw.
 *
 * Random numbers come from the caller's NumPy bit generator (its "BitGenerator" capsule),
 * with NumPy's own samplers (numpy/random/distributions.h, libnpyrandom): the caller owns
 * the generator, and the same generator state gives the same numbers.
 *
 * Only the Python C API and the buffer protocol are used (no NumPy C API), so the module
 * does not depend on the NumPy ABI beyond the bit generator struct.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#include "numpy/random/distributions.h"

static double uniform_open(bitgen_t *bg) {
    /* (0, 1]: its log is finite */
    return 1.0 - bg->next_double(bg->state);
}

typedef struct {
    double shape, d, c; /* Marsaglia & Tsang's constants of one shape >= 1 */
} gamma_shape;

static gamma_shape gamma_prepare(double shape) {
    gamma_shape g = {shape, shape - 1.0 / 3.0, 0.0};
    g.c = 1.0 / sqrt(9.0 * g.d);
    return g;
}

static double gamma_draw(bitgen_t *bg, const gamma_shape *g) {
    /* Gamma(shape, 1) by Marsaglia & Tsang (2000), as NumPy draws it, with the shape's
       constants computed once: the same draw as random_standard_gamma(bg, shape) */
    if (g->shape < 1.0) {
        return random_standard_gamma(bg, g->shape);
    }
    for (;;) {
        double x, v;
        do {
            x = random_standard_normal(bg);
            v = 1.0 + g->c * x;
        } while (v <= 0.0);
        v = v * v * v;
        const double u = bg->next_double(bg->state);
        if (u < 1.0 - 0.0331 * (x * x) * (x * x)) {
            return g->d * v;
        }
        if (log(u) < 0.5 * x * x + g->d * (1.0 - v + log(v))) {
            return g->d * v;
        }
    }
}

static double gamma_of(bitgen_t *bg, double shape, const gamma_shape *cached) {
    if (shape == cached->shape) {
        return gamma_draw(bg, cached);
    }
    return random_standard_gamma(bg, shape);
}

static Py_ssize_t period_of(double t, const int64_t *table, Py_ssize_t days) {
    /* the period of a time (days) by whole day; the last entry is "after the horizon" */
    if (!(t < (double)(days - 1))) {
        return (Py_ssize_t)table[days - 1];
    }
    return (Py_ssize_t)table[(Py_ssize_t)t];
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what,
                      int integers) {
    /* a C-contiguous buffer of float64 (or int64 with ``integers``) */
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS |
                                            PyBUF_FORMAT) < 0) {
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') {
        f++;
    }
    int ok = view->itemsize == 8 &&
             (integers ? (f[0] == 'q' || f[0] == 'l') && f[1] == 0 : f[0] == 'd' && f[1] == 0);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous array of %s", what,
                     integers ? "int64" : "float64");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static double last_purchase(bitgen_t *bg, double a, double b, const double *survival,
                            Py_ssize_t tabulated) {
    /* J, the repeat purchase after which a BG/NBD customer drops out: P(J > j) =
       B(a, b + j) / B(a, b). With its survival tabulated (S(1) .. S(K), decreasing), by
       inversion of one uniform; beyond the table, and without one, from p ~ Beta(a, b + k)
       given J > k and a geometric count. Infinite when p is 0. */
    double u = uniform_open(bg), beyond = 1.0;
    Py_ssize_t k = 0;
    if (tabulated > 0) {
        Py_ssize_t lo = 0, hi = tabulated; /* the first j (0-based) with S < u */
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (survival[mid] < u) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if (lo < tabulated) {
            return 1.0 + (double)lo;
        }
        k = tabulated;
        beyond = survival[tabulated - 1];
    }
    const double p = random_beta(bg, a, b + (double)k);
    if (!(p > 0)) {
        return INFINITY;
    }
    return (double)k + 1.0 + floor(log(u / beyond) / log1p(-p));
}

static PyObject *simulate(PyObject *self, PyObject *args) {
    PyObject *capsule, *params_obj, *history_obj, *table_obj, *out_obj, *survival_obj;
    int pareto, gamma_gamma;
    double horizon;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OiinOOdOOO", &capsule, &pareto, &gamma_gamma, &n, &params_obj,
                          &history_obj, &horizon, &table_obj, &out_obj, &survival_obj)) {
        return NULL;
    }
    bitgen_t *bg = (bitgen_t *)PyCapsule_GetPointer(capsule, "BitGenerator");
    if (bg == NULL) {
        return NULL;
    }
    Py_buffer params, table, out, hist[4], survival_view;
    int have_history = history_obj != Py_None, have_survival = survival_obj != Py_None;
    if (have_survival && get_buffer(survival_obj, &survival_view, 0, "survival", 0) < 0) {
        return NULL;
    }
    const double *survival = have_survival ? (const double *)survival_view.buf : NULL;
    const Py_ssize_t tabulated = have_survival ? survival_view.len / 8 : 0;
    if (get_buffer(params_obj, &params, 0, "params", 0) < 0) {
        if (have_survival) {
            PyBuffer_Release(&survival_view);
        }
        return NULL;
    }
    if (get_buffer(table_obj, &table, 0, "table", 1) < 0) {
        PyBuffer_Release(&params);
        return NULL;
    }
    if (get_buffer(out_obj, &out, 1, "out", 0) < 0) {
        PyBuffer_Release(&params);
        PyBuffer_Release(&table);
        return NULL;
    }
    int nhist = 0;
    if (have_history) {
        /* x (repeat purchases), T (age, model units), mean spend (NaN: unknown), P(alive) */
        if (!PyTuple_Check(history_obj) || PyTuple_GET_SIZE(history_obj) != 4) {
            PyErr_SetString(PyExc_TypeError, "history: expected a tuple of 4 arrays");
            goto fail;
        }
        for (; nhist < 4; nhist++) {
            if (get_buffer(PyTuple_GET_ITEM(history_obj, nhist), &hist[nhist], 0, "history",
                           0) < 0) {
                goto fail;
            }
            if (hist[nhist].len / 8 != n) {
                PyErr_SetString(PyExc_ValueError, "history: one value per customer");
                nhist++;
                goto fail;
            }
        }
    }
    if (params.len / 8 < 10) {
        PyErr_SetString(PyExc_ValueError, "params: expected 10 numbers");
        goto fail;
    }
    const double *pr = (const double *)params.buf;
    /* unit (days), r, alpha, a, b (BG/NBD), s, beta (Pareto/NBD), p, q, gamma (spend) */
    const double unit = pr[0], r = pr[1], alpha = pr[2], a = pr[3], b = pr[4];
    const double s = pr[5], beta_ = pr[6], p = pr[7], q = pr[8], g = pr[9];
    const int64_t *tab = (const int64_t *)table.buf;
    const Py_ssize_t days = table.len / 8;
    const Py_ssize_t periods = (Py_ssize_t)tab[days - 1];
    if (out.len / 8 < 3 * periods + 2) {
        PyErr_SetString(PyExc_ValueError, "out: expected 3 * periods + 2 numbers");
        goto fail;
    }
    /* out: purchases[P], revenue[P], ended[P + 1], began */
    double *purchases = (double *)out.buf, *revenue = purchases + periods;
    double *ended = revenue + periods, *began = ended + periods + 1;
    const double *x = have_history ? (const double *)hist[0].buf : NULL;
    const double *age = have_history ? (const double *)hist[1].buf : NULL;
    const double *spend = have_history ? (const double *)hist[2].buf : NULL;
    const double *alive = have_history ? (const double *)hist[3].buf : NULL;

    const int fresh_bg = !pareto && !have_history;
    const gamma_shape g_rate = gamma_prepare(r + 1.0), g_nu = gamma_prepare(q);
    const gamma_shape g_spend = gamma_prepare(p);
    const double no_purchase = pow(alpha / (alpha + horizon / unit), r);

    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < n; i++) {
        double xi = have_history ? x[i] : 0.0;
        if (have_history && !(uniform_open(bg) <= alive[i])) {
            continue; /* not alive at the start */
        }
        *began += 1.0;
        const double shape = r + xi, rate = alpha + (have_history ? age[i] : 0.0);
        double end = horizon, until = INFINITY;
        if (pareto) {
            const double mu = random_standard_gamma(bg, s) / beta_ / unit; /* per day */
            until = random_standard_exponential(bg) / mu;
            end = until < horizon ? until : horizon;
        }
        /* the first repeat purchase comes after a Lomax time, P(T > w) = (rate / (rate +
           w))^shape (model units): it is in the horizon when its uniform is above that at
           the end, which is one number for a fresh cohort of BG/NBD customers */
        const double u = uniform_open(bg);
        if (fresh_bg && !(u > no_purchase)) {
            ended[periods] += 1.0; /* no purchase, still alive at the end */
            continue;
        }
        const double wait = rate * expm1(-log(u) / shape);
        double t = wait * unit;
        if (t < end) {
            /* the mean gap between purchases (days): 1 / lambda */
            const double gap = (rate + wait) * unit / gamma_of(bg, shape + 1.0, &g_rate);
            double scale = 1.0; /* of the spend: 1 / nu */
            if (gamma_gamma) {
                double qs = q, qr = g;
                if (have_history && xi > 0 && !isnan(spend[i])) {
                    qs += p * xi;
                    qr += xi * spend[i];
                }
                scale = qr / gamma_of(bg, qs, &g_nu);
            }
            /* BG/NBD: the purchase after which it drops out (a table only for one b) */
            const double last = pareto ? INFINITY
                                       : last_purchase(bg, a, b + xi, xi > 0 ? NULL : survival,
                                                       xi > 0 ? 0 : tabulated);
            /* the spend of a period's purchases at once: a sum of n Gamma(p) is Gamma(n p) */
            Py_ssize_t current = -1;
            double count = 1.0, in_period = 0.0;
            for (;;) {
                const Py_ssize_t k = period_of(t, tab, days);
                purchases[k] += 1.0;
                if (k != current) {
                    if (gamma_gamma && in_period > 0) {
                        revenue[current] += gamma_of(bg, p * in_period, &g_spend) * scale;
                    }
                    current = k;
                    in_period = 0.0;
                }
                in_period += 1.0;
                if (count >= last) {
                    until = t;
                    break;
                }
                t += random_standard_exponential(bg) * gap;
                if (!(t < end)) {
                    break;
                }
                count += 1.0;
            }
            if (gamma_gamma) {
                revenue[current] += gamma_of(bg, p * in_period, &g_spend) * scale;
            }
        }
        ended[until < horizon ? period_of(until, tab, days) : periods] += 1.0;
    }
    Py_END_ALLOW_THREADS;

    PyBuffer_Release(&params);
    PyBuffer_Release(&table);
    PyBuffer_Release(&out);
    for (int j = 0; j < nhist; j++) {
        PyBuffer_Release(&hist[j]);
    }
    if (have_survival) {
        PyBuffer_Release(&survival_view);
    }
    Py_RETURN_NONE;

fail:
    if (have_survival) {
        PyBuffer_Release(&survival_view);
    }
    PyBuffer_Release(&params);
    PyBuffer_Release(&table);
    PyBuffer_Release(&out);
    for (int j = 0; j < nhist; j++) {
        PyBuffer_Release(&hist[j]);
    }
    return NULL;
}

static PyMethodDef methods[] = {
    {"simulate", simulate, METH_VARARGS,
     "simulate(capsule, pareto, gamma_gamma, n, params, history, horizon, table, out, "
     "survival)\n\n"
     "One replication's existing customers; adds purchases, revenue and stops per period "
     "and the customers alive at the start into out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cohort", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cohort(void) { return PyModule_Create(&module); }
