//! The kernels of the GPT layers — causal softmax and its backward, dropout on the causal past,
//! embedding gather and scatter-add — run on the CPU (see the parent module) against the host
//! backend, bit for bit.

use super::{assert_bits, ops, tensor};
use crate::backend::{causal_dropout, causal_softmax, causal_softmax_backward, embedding, embedding_grads};
use crate::layers::{Ctx, Dropout};
use crate::rng::Stream;
use crate::tensor::Tensor;

/// `(sequences, seq, heads)`: one token, one head, and sizes on both sides of a block of
/// segments or elements.
const LAYOUTS: [(usize, usize, usize); 6] = [(1, 1, 1), (2, 3, 2), (1, 7, 1), (3, 5, 4), (2, 16, 9), (4, 9, 8)];

#[test]
fn causal_softmax_forward_and_backward() {
    let ops = ops();
    let fwd: unsafe extern "C" fn(*mut f32, u32, u32, u32, f32) = ops.kernel("k_causal_softmax");
    let bwd: unsafe extern "C" fn(*const f32, *mut f32, u32, u32, f32) = ops.kernel("k_causal_softmax_backward");
    for (k, &(n, seq, heads)) in LAYOUTS.iter().enumerate() {
        let (rows, cols) = (n * seq, heads * seq);
        // Scores over many magnitudes (some far below the max: exp_approx's clamp), and scores
        // of a few units.
        for (scores, scale) in [(tensor(rows, cols, 300 + k as u64), 0.125), (small(rows, cols, k as u64), 0.5)] {
            let mut want = scores.clone();
            causal_softmax(&mut want, seq, scale).unwrap();
            let mut got = scores.to_vec();
            let (segments, ps) = ((rows * heads) as u32, got.as_mut_ptr());
            // SAFETY: `got` holds rows·cols = segments·seq floats; one thread per segment.
            #[allow(unsafe_code)]
            ops.grid(segments, || unsafe { fwd(ps, segments, heads as u32, seq as u32, scale) });
            assert_bits("causal_softmax", &got, want.data());

            let g = tensor(rows, cols, 400 + k as u64);
            let mut want_g = g.clone();
            causal_softmax_backward(&want, &mut want_g, seq, scale).unwrap();
            let mut got_g = g.to_vec();
            let (pp, pg) = (want.data().as_ptr(), got_g.as_mut_ptr());
            // SAFETY: both hold segments·seq floats; one thread per segment.
            #[allow(unsafe_code)]
            ops.grid(segments, || unsafe { bwd(pp, pg, segments, seq as u32, scale) });
            assert_bits("causal_softmax_backward", &got_g, want_g.data());
        }
    }
}

/// Values of a few units.
fn small(rows: usize, cols: usize, salt: u64) -> Tensor {
    let s = Stream::new(&[0x5F, salt]);
    Tensor::from_fn(rows, cols, |r, c| 3.0 * s.normal((r * cols + c) as u64))
}

#[test]
fn dropout_on_the_causal_past() {
    let ops = ops();
    let k: unsafe extern "C" fn(*mut f32, u32, u32, u32, u64, f32, f32) = ops.kernel("k_causal_dropout");
    for (i, &(n, seq, heads)) in LAYOUTS.iter().enumerate() {
        let (rows, cols) = (n * seq, heads * seq);
        let (rate, ctx) = ([0.1, 0.5, 0.9][i % 3], Ctx::new(3, i as u64, 2, 7));
        let stream = Dropout { rate }.stream_at(&ctx, 1);
        let x = tensor(rows, cols, 500 + i as u64);
        let mut want = x.clone();
        causal_dropout(&mut want, &stream, rate, seq).unwrap();
        let mut got = x.to_vec();
        let (pt, scale, len) = (got.as_mut_ptr(), 1.0 / (1.0 - rate), (rows * cols) as u32);
        // SAFETY: `got` holds rows·cols floats; the kernel guards i < rows·cols.
        #[allow(unsafe_code)]
        ops.grid(len, || unsafe { k(pt, rows as u32, cols as u32, seq as u32, stream.key(), rate, scale) });
        assert_bits("causal_dropout", &got, want.data());
    }
}

#[test]
fn embedding_gather_and_scatter_add() {
    let ops = ops();
    type Gather = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, u32, u32, u32, u32);
    let gather: Gather = ops.kernel("k_embedding");
    let tokens_grad: unsafe extern "C" fn(*const f32, *const f32, *mut f32, u32, u32, u32) =
        ops.kernel("k_embedding_token_grad");
    let positions_grad: unsafe extern "C" fn(*const f32, *mut f32, u32, u32, u32) =
        ops.kernel("k_embedding_position_grad");
    for (k, &(vocab, width, seq, n)) in
        [(1, 1, 1, 1), (5, 3, 2, 3), (256, 32, 16, 2), (300, 257, 7, 3)].iter().enumerate()
    {
        let salt = 600 + 10 * k as u64;
        let (tokens, positions) = (tensor(vocab, width, salt), tensor(seq, width, salt + 1));
        let rows = n * seq;
        // Repeated ids, so the scatter adds several rows into one.
        let s = Stream::new(&[0x1D, salt]);
        let ids = Tensor::from_fn(rows, 1, |r, _| (s.bits(r as u64) % (vocab as u64).min(4)) as f32);
        let want = embedding(&ids, &tokens, &positions).unwrap();
        let mut got = vec![f32::NAN; rows * width];
        let (pi, pt, pp, po) =
            (ids.data().as_ptr(), tokens.data().as_ptr(), positions.data().as_ptr(), got.as_mut_ptr());
        let (r, w, v, t) = (rows as u32, width as u32, vocab as u32, seq as u32);
        // SAFETY: ids hold rows floats (valid ids), the tables vocab·width and seq·width, `got`
        // rows·width; the kernel guards i < rows·width.
        #[allow(unsafe_code)]
        ops.grid(r * w, || unsafe { gather(pi, pt, pp, po, r, w, v, t) });
        assert_bits("embedding", &got, want.data());

        let dy = tensor(rows, width, salt + 2);
        let [want_t, want_p] = embedding_grads(&ids, &dy, &tokens, &positions).unwrap();
        let (mut gt, mut gp) = (vec![f32::NAN; vocab * width], vec![f32::NAN; seq * width]);
        let (pd, pgt, pgp) = (dy.data().as_ptr(), gt.as_mut_ptr(), gp.as_mut_ptr());
        // SAFETY: dy holds rows·width floats, `gt` vocab·width, `gp` seq·width; one thread per
        // column of the token table, one per element of the position table.
        #[allow(unsafe_code)]
        {
            ops.grid(w, || unsafe { tokens_grad(pi, pd, pgt, r, w, v) });
            ops.grid(t * w, || unsafe { positions_grad(pd, pgp, r, w, t) });
        }
        assert_bits("embedding token gradient", &gt, want_t.data());
        assert_bits("embedding position gradient", &gp, want_p.data());
    }
}

#[test]
fn an_invalid_id_gives_a_row_of_nan_and_no_gradient() {
    let ops = ops();
    type Gather = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, u32, u32, u32, u32);
    let gather: Gather = ops.kernel("k_embedding");
    let tokens_grad: unsafe extern "C" fn(*const f32, *const f32, *mut f32, u32, u32, u32) =
        ops.kernel("k_embedding_token_grad");
    let (tokens, positions) = (tensor(3, 2, 1), tensor(1, 2, 2));
    let ids = [1.0f32, 3.0, -1.0, 0.5, f32::NAN, 2.0];
    let mut got = vec![0.0f32; 12];
    let (pi, pt, pp, po) = (ids.as_ptr(), tokens.data().as_ptr(), positions.data().as_ptr(), got.as_mut_ptr());
    // SAFETY: 6 ids, tables of 3·2 and 1·2 floats, 12 outputs; only valid ids index a table.
    #[allow(unsafe_code)]
    ops.grid(12, || unsafe { gather(pi, pt, pp, po, 6, 2, 3, 1) });
    for (r, row) in got.chunks(2).enumerate() {
        assert_eq!(row.iter().all(|v| v.is_nan()), (1..5).contains(&r), "row {r}: {row:?}");
    }
    let dy = [1.0f32; 12];
    let mut grad = vec![f32::NAN; 6];
    let pg = grad.as_mut_ptr();
    // SAFETY: as above; the gradient table holds 3·2 floats.
    #[allow(unsafe_code)]
    ops.grid(2, || unsafe { tokens_grad(pi, dy.as_ptr(), pg, 6, 2, 3) });
    assert_eq!(grad, [0.0, 0.0, 1.0, 1.0, 1.0, 1.0], "ids 1 and 2 once each; the invalid ones nowhere");
}
