"""One dense layer's forward and backward pass, for a batch of m samples stacked as rows.

These are E7, E9 and E10 of the derivation (and E10 with E12's step, for plain SGD); W is
(n_out, n_in), one row per neuron.
"""


def dense_forward(A_prev, W, b, inplace=False):
    """E7: U(l) = A(l-1) W(l)^T + b(l), b broadcast over the rows.

    ``inplace`` adds b into the fresh product instead of allocating a second array
    (for mutable backends)."""
    U = A_prev @ W.T
    if inplace:
        U += b
        return U
    return U + b


def backprop_delta(xp, delta_next, W_next, activation, A):
    """E9: Δ(l) = (Δ(l+1) W(l+1)) ⊙ f_l'(U(l)), with f_l' written from A(l) = f_l(U(l))."""
    return activation.backward(xp, A, delta_next @ W_next)


def dense_grads(xp, delta, A_prev):
    """E10: grad W(l) = Δ(l)^T A(l-1), grad b(l) = Σ over rows of Δ(l) (Δ already holds 1/m)."""
    return delta.T @ A_prev, xp.sum(delta, axis=0)


def dense_descend(xp, W, b, delta, A_prev, subtract_matmul, subtract_colsum=None):
    """E10 and E12 at once, for plain SGD with Δ already holding lr/m: W <- W - Δ^T A(l-1),
    b <- b - Σ over rows of Δ, in place. ``subtract_matmul`` is the backend's one-call
    multiply-accumulate product, so the weight gradient never exists as an array;
    ``subtract_colsum``, where the backend has one, takes the bias step in one call too."""
    subtract_matmul(W, delta, A_prev)
    if subtract_colsum is not None:
        subtract_colsum(b, delta)
    else:
        b -= xp.sum(delta, axis=0)
