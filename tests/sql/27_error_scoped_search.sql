-- scope: alpha
SELECT * FROM search('cello', 5, 'beta');
----
error[403]: cube beta is not readable with this key
