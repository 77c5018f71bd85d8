"""Switchyard's simulated upstream, one module per upstream it impersonates (oauth, cloudcode,
gemini_api, openai_api with openai_embeddings and openai_images, anthropic_api) plus the shared
parts (catalogue, claude, gemini_body, refusals, errors, rules, control, state, server);
scripts/simupstream.py is its entry point and manual."""
