// `interpreter: 'python3'` for a Python script, with interpreter_args.
module.exports = {
  apps: [{
    name: 'py',
    script: 'worker.py',
    interpreter: 'python3',
    interpreter_args: '-u',
    args: ['--queue', 'mail'],
  }],
};
