// A Node app as PM2 users write them: listen(PORT), then tell PM2 it is ready.
const http = require('http');

const port = process.env.PORT || 3000;
const server = http.createServer((req, res) => {
  res.end(`${process.env.NODE_ENV || 'none'} ${process.env.NODE_APP_INSTANCE} ${process.pid}\n`);
});
server.listen(port, () => {
  process.send('ready');
});
