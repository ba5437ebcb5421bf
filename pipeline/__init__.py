"""The data pipeline: photos -> a finished store. One module per stage, in the order a run takes them:

1. finding: `layouts` (every layout, `auto` detection), `discover` (class folders), `tars` (WebDataset shards);
2. decoding: `decode` (DALI, with Pillow's header check and fallback);
3. staging: `part` (one part of the sources -> encoded chunks, records, a histogram), with `config`
   (`PreprocessConfig`, the settings that decide a store's content);
4. building: `build` (every part on any executor, the shards as parts finish, the store finished);
5. priors: `priors` (Eq. 9-10);
6. checking: `check` (the data-quality check of a finished store).

Beside the stages: `store/`, the store's format with its writer and reader side by side; `common/`, the plumbing
training and the flow share (the command-line contract, settings as flags, extras, atomic files); `embedded`,
the embedded default data set the main job runs on.
"""
