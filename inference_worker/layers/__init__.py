"""Model building blocks: fused linears, paged attention, rotary embedding, norms, sampler."""
